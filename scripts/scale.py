#!/usr/bin/env python3
# scale.py: encryptor throughput per process count (README "Scaling", BENCHMARKS.md). Preloads
# MSGS messages on a 6-partition plaintext topic, then for each process count (1, 2, 3) runs that
# many encryptor processes in a fresh consumer group (new storage topic each) and times 10 %..90 %
# of the backlog from their "Written" stats. Run it through scripts/scale.sh, which starts Kafka and
# Vault and builds the binaries; env: BROKERS, VAULT, BIN, KAFKA_LIBS, LOGS, MSGS, RUNS.
import glob, json, os, subprocess, sys, time, urllib.request, statistics
B = os.environ["BROKERS"]; V = os.environ["VAULT"]; BIN = os.environ["BIN"]; LOGS = os.environ["LOGS"]
KAFKA_CP = os.path.join(os.environ["KAFKA_LIBS"], "*")

def mk(partitions, *topics):
    """Creates topics with Kafka's own TopicCommand (byok's topic settings: 8 MiB messages)."""
    for t in topics:
        subprocess.check_call(["java", "-cp", KAFKA_CP, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", B,
                               "--create", "--if-not-exists", "--topic", t, "--partitions", str(partitions),
                               "--replication-factor", "1", "--config", "max.message.bytes=8388608"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
M = int(os.environ.get("MSGS", "200000")); RUNS = int(os.environ.get("RUNS", "3"))
run = "scale-%d" % int(time.time())
inp = run + ".plaintext"
def vault(path, data):
    req = urllib.request.Request(V + "/v1/" + path, data=json.dumps(data).encode(), headers={"X-Vault-Token": "root"}, method="POST")
    urllib.request.urlopen(req).read()
tenants = {}
for i in (1, 2, 3):
    k = "%s-tenant-%d" % (run, i)
    vault("transit/keys/" + k, {"type": "aes256-gcm96", "derived": True})
    tenants["tenant-%d" % i] = {"enabled": True, "provider": "vault", "kek_id": k, "credential": {"address": V, "token": "root"}}
tj = json.dumps({"tenants": tenants})
mk(6, inp)
t0 = time.time()
subprocess.check_call([BIN + "/loadgen", "-target", "kafka", "-brokers", B, "-plaintext-topic", inp, "-messages", str(M),
                       "-chats", "1000", "-tenants", "3", "-batch", "1000", "-concurrency", "4"], stdout=subprocess.DEVNULL)
print("preloaded %d messages (1000 chats, 3 tenants, 200 B bodies) in %.1fs" % (M, time.time() - t0), flush=True)

def written(path):
    last = 0
    with open(path) as f:
        for l in f:
            try: j = json.loads(l)
            except Exception: continue
            if j.get("message") == "stats": last = j["worker"]["Written"]
    return last

results = {}
for r in range(RUNS):
    for n in (1, 2, 3):
        g = "%s-n%d-r%d" % (run, n, r)
        env = dict(os.environ, BYOK_KAFKA_BROKERS=B, BYOK_PLAINTEXT_TOPIC=inp, BYOK_STORAGE_TOPIC=g + ".stored",
                   BYOK_DEADLETTER_TOPIC=g + ".dead", BYOK_AUDIT_TOPIC=g + ".audit", BYOK_ENCRYPTOR_GROUP=g,
                   BYOK_TENANTS=tj, BYOK_STATS_INTERVAL="200ms", BYOK_KMS_INSECURE_LOOPBACK="true",
                   BYOK_METRICS_LISTEN="127.0.0.1:0", BYOK_SESSION_TIMEOUT="6s")
        mk(6, g + ".stored", g + ".audit")
        mk(1, g + ".dead")
        env["BYOK_CREATE_TOPICS"] = "false"
        procs, logs = [], []
        for i in range(n):
            lp = os.path.join(LOGS, "%s-%d.log" % (g, i)); logs.append(lp)
            procs.append(subprocess.Popen([BIN + "/encryptor"], env=dict(env, BYOK_WORKER_ID="w%d" % i), stdout=open(lp, "w"), stderr=subprocess.STDOUT))
        start = time.time(); t10 = t90 = None
        while time.time() - start < 300:
            s = sum(written(l) for l in logs)
            now = time.time()
            if t10 is None and s >= 0.1 * M: t10 = (now, s)
            if s >= 0.9 * M: t90 = (now, s); break
            time.sleep(0.1)
        for p in procs: p.terminate()
        for p in procs: p.wait()
        rate = (t90[1] - t10[1]) / (t90[0] - t10[0])
        per = [written(l) for l in logs]
        results.setdefault(n, []).append(rate)
        print("run %d, %d encryptor(s): %.0f msg/s (10%%..90%% of %d), total %.1fs from start, written per process %s" % (r + 1, n, rate, M, t90[0] - start, per), flush=True)
for n in (1, 2, 3):
    rs = results[n]
    print("%d encryptor(s): median %.0f msg/s  runs %s  per process %.0f" % (n, statistics.median(rs), [round(x) for x in rs], statistics.median(rs) / n))
