#!/usr/bin/env python3
"""Sends spans with the official OpenTelemetry Python SDK to a running `make up` and checks that each
appears exactly once in the store.

    pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc opentelemetry-exporter-otlp-proto-http
    python3 scripts/otel-sdk-smoke.py [--spans 50] [--store http://127.0.0.1:9200]

It exports N spans over OTLP gRPC (localhost:4317) and N over OTLP HTTP (localhost:4318), then polls
`jaeger-span-*` until every span id is found, and fails if any is missing or indexed twice.
"""
import argparse
import json
import sys
import time
import urllib.request

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def send(exporter, service, n):
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("spanline-smoke")
    ids = []
    for i in range(n):
        with tracer.start_as_current_span(f"smoke-op-{i % 3}") as span:
            span.set_attribute("smoke.index", i)
            ids.append(format(span.get_span_context().span_id, "016x"))
    provider.shutdown()
    return ids


def search(store, index, body):
    req = urllib.request.Request(f"{store}/{index}/_search", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=50)
    parser.add_argument("--grpc", default="http://localhost:4317")
    parser.add_argument("--http", default="http://localhost:4318/v1/traces")
    parser.add_argument("--store", default="http://127.0.0.1:9200")
    args = parser.parse_args()
    run = str(int(time.time()))
    ids = {"grpc": send(GrpcExporter(endpoint=args.grpc, insecure=True), f"smoke-grpc-{run}", args.spans),
           "http": send(HttpExporter(endpoint=args.http), f"smoke-http-{run}", args.spans)}
    for proto, span_ids in ids.items():
        service = f"smoke-{proto}-{run}"
        deadline = time.time() + 30
        while True:
            urllib.request.urlopen(urllib.request.Request(f"{args.store}/jaeger-span-*/_refresh", method="POST"))
            hits = search(args.store, "jaeger-span-*", {"size": 10000, "query": {"term": {"process.serviceName": service}}})
            found = [h["_source"]["spanID"] for h in hits["hits"]["hits"]]
            if len(found) >= len(span_ids) or time.time() > deadline:
                break
            time.sleep(0.5)
        missing = set(span_ids) - set(found)
        dupes = len(found) - len(set(found))
        print(f"{proto}: sent {len(span_ids)}, indexed {len(found)}, missing {len(missing)}, duplicated {dupes}")
        if missing or dupes or len(found) != len(span_ids):
            sys.exit(1)
    print("ok: every span appears exactly once")


if __name__ == "__main__":
    main()
