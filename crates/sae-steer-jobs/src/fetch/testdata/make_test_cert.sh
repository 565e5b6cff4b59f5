#!/bin/sh
# Makes the TLS test certificates of the fetch tests (committed; rerun only to
# replace them): a CA the test builds of xtask trust, and a leaf for
# 127.0.0.1 signed by it, valid for 100 years. Test-only keys: nothing but a
# `cargo test` build of xtask trusts this CA.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 \
    -subj "/CN=sae-steer fetch test CA" -keyout "$tmp/ca.key" -out "$tmp/ca.pem"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=127.0.0.1" -keyout "$tmp/leaf.key" -out "$tmp/leaf.csr"
printf 'basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' > "$tmp/ext.cnf"
openssl x509 -req -in "$tmp/leaf.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
    -days 36500 -extfile "$tmp/ext.cnf" -out "$tmp/leaf.pem"
openssl x509 -in "$tmp/ca.pem" -outform der -out ca.der
openssl x509 -in "$tmp/leaf.pem" -outform der -out leaf.der
openssl pkcs8 -topk8 -nocrypt -in "$tmp/leaf.key" -outform der -out leaf.key.der
