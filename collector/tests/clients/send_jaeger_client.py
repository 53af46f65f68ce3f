"""Sends one small trace through Jaeger's own Python client (`jaeger-client`, the OpenTracing
tracer), as its users send it: to the agent's UDP port, Thrift compact.

    send_jaeger_client.py HOST:PORT

A const sampler (param 1) and no throttler: nothing is asked of a sampling endpoint. Waits until
the client's reporter has written every finished span to the socket (its own `jaeger:reporter_spans`
counter, bounded), then prints the spans as the client put them on the wire (its Thrift structs,
built by the client's own `make_jaeger_batch`), one JSON object per line, tags and log fields in
Jaeger's JSON form ({"key", "type", "value" as a string}), for the test to find field by field.
Run by ingester/tests/clients_pipeline.rs with the venv scripts/install-deps.sh makes
(.run/clients-venv).
"""

import json
import sys
import time

import opentracing
from jaeger_client import Config
from jaeger_client import thrift as jaeger_thrift
from jaeger_client.metrics import MetricsFactory
from jaeger_client.thrift_gen.jaeger import ttypes

host, port = sys.argv[1].rsplit(":", 1)
SERVICE = "py-jaeger-client"


class Counting(MetricsFactory):
    """Counts the spans the reporter wrote to the socket, and those it could not."""

    def __init__(self):
        super().__init__()
        self.reported = {"ok": 0, "err": 0, "dropped": 0}

    def create_counter(self, name, tags=None):
        if name == "jaeger:reporter_spans":
            result = (tags or {}).get("result")

            def count(value):
                self.reported[result] = self.reported.get(result, 0) + value

            return count
        return super().create_counter(name, tags)


metrics = Counting()
config = Config(
    config={
        "sampler": {"type": "const", "param": 1},
        "local_agent": {"reporting_host": host, "reporting_port": int(port)},
        "reporter_batch_size": 1,
        "logging": False,
    },
    service_name=SERVICE,
    metrics_factory=metrics,
    validate=True,
)
tracer = config.new_tracer()

parent = tracer.start_span("GET /cart", tags={"span.kind": "server", "http.method": "GET", "retries": 3})
child = tracer.start_span("SELECT cart", child_of=parent, tags={"span.kind": "client", "db.type": "sql"})
child.log_kv({"event": "retry", "attempt": 1, "reason": "timeout"})
child.set_tag("error", True)
child.finish()
# A span with two references: its parent is the first (CHILD_OF), the other (FOLLOWS_FROM) a link.
audit = tracer.start_span(
    "audit", references=[opentracing.child_of(child.context), opentracing.follows_from(parent.context)]
)
audit.finish()
parent.finish()
spans = [parent, child, audit]

deadline = time.monotonic() + 10
while metrics.reported["ok"] < len(spans) and time.monotonic() < deadline:
    time.sleep(0.05)
tracer.close()
if metrics.reported["ok"] != len(spans):
    sys.exit(f"the reporter sent {metrics.reported} of {len(spans)} spans")

KINDS = {
    ttypes.TagType.STRING: ("string", lambda t: t.vStr),
    ttypes.TagType.BOOL: ("bool", lambda t: "true" if t.vBool else "false"),
    ttypes.TagType.LONG: ("int64", lambda t: str(t.vLong)),
}


def tag(t):
    if t.vType not in KINDS:
        sys.exit(f"tag {t.key}: keep to string, bool and int tags (the test compares them as text)")
    kind, value = KINDS[t.vType]
    return {"key": t.key, "type": kind, "value": value(t)}


process = jaeger_thrift.make_process(SERVICE, tracer.tags, max_length=1024)
batch = jaeger_thrift.make_jaeger_batch(spans=spans, process=process)
for span in batch.spans:
    print(
        json.dumps(
            {
                "trace_id": f"{span.traceIdHigh & (2**64 - 1):016x}{span.traceIdLow & (2**64 - 1):016x}",
                "span_id": f"{span.spanId & (2**64 - 1):016x}",
                "parent": f"{span.parentSpanId & (2**64 - 1):016x}" if span.parentSpanId else "",
                "name": span.operationName,
                "flags": span.flags,
                "start": span.startTime,
                "duration": span.duration,
                "references": [
                    {
                        "refType": "CHILD_OF" if r.refType == ttypes.SpanRefType.CHILD_OF else "FOLLOWS_FROM",
                        "traceID": f"{r.traceIdHigh & (2**64 - 1):016x}{r.traceIdLow & (2**64 - 1):016x}",
                        "spanID": f"{r.spanId & (2**64 - 1):016x}",
                    }
                    for r in span.references or []
                ],
                "tags": [tag(t) for t in span.tags],
                "logs": [{"timestamp": log.timestamp, "fields": [tag(f) for f in log.fields]} for log in span.logs],
                "service": batch.process.serviceName,
                "process_tags": [tag(t) for t in batch.process.tags],
            }
        )
    )
