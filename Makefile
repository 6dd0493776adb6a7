# byok — the two commands a new machine needs are `make run` and `make test` (see README.md).
.PHONY: run run-embedded test proto bench bench-embedded kafka-start kafka-stop vault-start vault-stop build clean

run: ## the pipeline end to end on a real Kafka and a real Vault (started and stopped here)
	bash scripts/demo.sh

run-embedded: ## the same with no dependencies: in-process broker, local key file
	cd services && go run ./demo

test: ## every test, starting real Kafka and Vault (what CI runs)
	bash scripts/test.sh

proto: ## regenerate pkg/gen from schemas/proto
	bash scripts/gen-proto.sh

bench: ## encrypt vs identity pass-through on a real Kafka, then Vault at 100k new scopes (BENCHMARKS.md)
	bash scripts/bench.sh -messages 500000 -rounds 5

bench-embedded:
	cd services && go run ./bench

build: ## service binaries into bin/
	mkdir -p bin
	cd services && for s in ingest encryptor loadgen; do go build -o ../bin/$$s ./$$s || exit 1; done

kafka-start: ; bash scripts/kafka.sh start
kafka-stop: ; bash scripts/kafka.sh stop
vault-start: ; bash scripts/vault.sh start
vault-stop: ; bash scripts/vault.sh stop

clean: ## runtime state (keeps the download/build cache in .cache/)
	rm -rf .run bin
