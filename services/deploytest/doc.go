// Package deploytest holds no code, only tests: they load the deployment files that live outside
// Go — docker-compose.yml, services/<svc>/Dockerfile, deploy/compose and deploy/k8s — with the
// same loaders Docker Compose (compose-go) and Kubernetes (typed API objects, strict decoding)
// use, and check them against the code: every BYOK_* variable a file sets must be one the
// service's Go sources read, every port must be the one the service listens on, every probe,
// selector, budget and autoscaler must point at something that exists. Nothing here starts a
// container; no Docker engine or cluster is needed. What can run without one does: the compose
// scripts that check Kafka connectivity and make the settings key run with this machine's sh, the
// code that creates the control topics runs against an in-process Kafka (kfake), to compare with
// the topics compose's init job makes, and a real forwarder with compose's targets file delivers
// audit events from kfake to compose's demo webhook receiver, run with this machine's python3.
package deploytest
