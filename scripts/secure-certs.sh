#!/usr/bin/env bash
# Development PKI and credentials for the secure deployment (docs/security.md, "Deploying securely"):
# a CA, server certificates for the collector, Kafka and OpenSearch, a client certificate for
# senders (mTLS, off by default), random passwords, bearer tokens and the redaction HMAC key, all
# written to deploy/secure/generated/ (gitignored). docker-compose.secure.yml mounts them as Compose
# secrets and deploy/secure/kustomization.yaml turns them into Kubernetes Secrets.
#
#   scripts/secure-certs.sh            # create what is missing (an existing file is kept)
#   scripts/secure-certs.sh --force    # start over: a new CA, new keys, new passwords
#
# Development only: the private keys are left readable by every local user (mode 0644) because
# Compose bind-mounts secrets with their host owner and mode, and the containers run as other
# users (Kafka and OpenSearch as uid 1000, Spanline as 10001). Use your own CA and secret store for
# anything else.
set -euo pipefail

cd "$(dirname "$0")/.."
out=deploy/secure/generated
days=${DAYS:-365}

if [[ "${1:-}" == "--force" ]]; then rm -rf "$out"; fi
mkdir -p "$out"
umask 022

random() { openssl rand -hex "${1:-24}"; }

# A secret value file, no trailing newline: the *_file readers take the whole file.
secret() {
  local file=$out/$1
  [[ -s $file ]] || { printf '%s' "$2" >"$file"; echo "wrote $file"; }
}

if [[ ! -s $out/ca.crt ]]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days "$days" -subj "/CN=Spanline dev CA" \
    -keyout "$out/ca.key" -out "$out/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "wrote $out/ca.crt"
fi

# cert NAME CN SAN EKU: a PKCS#8 key (what OpenSearch requires) and a certificate signed by the CA.
cert() {
  local name=$1 cn=$2 san=$3 eku=$4
  [[ -s $out/$name.crt ]] && return
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$out/$name.key" -out "$out/$name.csr" 2>/dev/null
  openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days "$days" -out "$out/$name.crt" -extfile <(printf '%s\n' \
      "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=$eku" ${san:+"subjectAltName=$san"}) 2>/dev/null
  rm -f "$out/$name.csr"
  echo "wrote $out/$name.crt"
}

# The collector's OTLP listeners: the Compose service, localhost for senders on this machine, and
# the Kubernetes Service (namespace "spanline" by default: SPANLINE_NAMESPACE).
ns=${SPANLINE_NAMESPACE:-spanline}
cert collector spanline-collector \
  "DNS:collector,DNS:localhost,IP:127.0.0.1,DNS:spanline-collector,DNS:spanline-collector.$ns.svc,DNS:spanline-collector.$ns.svc.cluster.local" \
  serverAuth
# Kafka's SASL_SSL listener. Its key and certificate also go in one PEM keystore (Kafka's PEM type).
cert kafka kafka "DNS:kafka,DNS:localhost" serverAuth,clientAuth
[[ -s $out/kafka-keystore.pem ]] || cat "$out/kafka.key" "$out/kafka.crt" >"$out/kafka-keystore.pem"
# OpenSearch uses one certificate for HTTP and for its transport layer (client and server).
cert opensearch opensearch "DNS:opensearch,DNS:localhost" serverAuth,clientAuth
# A sender's client certificate, for receivers.tls.client_ca_file (mTLS).
cert sender trace-sender "" clientAuth

secret kafka-password "$(random)"
secret opensearch-password "$(random)"
secret opensearch-admin-password "$(random)"
secret redaction-hash-key "$(random 32)"
# One token per line; add a line to rotate, remove the old one once senders have moved.
[[ -s $out/bearer-tokens ]] || { random 32 >"$out/bearer-tokens"; echo "wrote $out/bearer-tokens"; }

rm -f "$out/ca.srl"
chmod 0644 "$out"/*
chmod 0600 "$out/ca.key"   # mounted nowhere
echo "done: $out (a sender's token is the first line of $out/bearer-tokens)"
