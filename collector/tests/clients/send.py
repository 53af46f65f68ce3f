"""Sends one small trace through a real Zipkin or Jaeger client library, as their users send it.

    send.py PROTOCOL ENDPOINT [BITS]

PROTOCOL: zipkin-json, zipkin-proto (ENDPOINT a URL), jaeger-http (a URL), jaeger-agent (HOST:PORT,
Thrift compact over UDP). BITS: 128 (default) or 64, the trace id's width (64: as a Jaeger or B3
client's). Prints the spans the SDK finished, one JSON object per line, for the test to find.
Run by collector/tests/inputs.rs with the venv scripts/install-deps.sh makes (.run/clients-venv).
"""

import json
import random
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

protocol, endpoint = sys.argv[1], sys.argv[2]
bits = int(sys.argv[3]) if len(sys.argv) > 3 else 128


class SixtyFourBit(RandomIdGenerator):
    def generate_trace_id(self):
        return random.getrandbits(64) or 1


if protocol == "zipkin-json":
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    exporter = ZipkinExporter(endpoint=endpoint)
elif protocol == "zipkin-proto":
    from opentelemetry.exporter.zipkin.proto.http import ZipkinExporter

    exporter = ZipkinExporter(endpoint=endpoint)
elif protocol == "jaeger-http":
    from opentelemetry.exporter.jaeger.thrift import JaegerExporter

    exporter = JaegerExporter(collector_endpoint=endpoint)
elif protocol == "jaeger-agent":
    from opentelemetry.exporter.jaeger.thrift import JaegerExporter

    host, port = endpoint.rsplit(":", 1)
    exporter = JaegerExporter(agent_host_name=host, agent_port=int(port))
else:
    sys.exit(f"unknown protocol {protocol}")

provider = TracerProvider(
    resource=Resource.create({"service.name": f"py-{protocol}"}),
    id_generator=SixtyFourBit() if bits == 64 else RandomIdGenerator(),
)
memory = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(memory))
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("spanline-clients")
with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
    parent.set_attribute("http.method", "GET")
    parent.set_attribute("retries", 3)
    with tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
        child.add_event("retry", {"attempt": 1})
        child.set_status(Status(StatusCode.ERROR, "boom"))
provider.shutdown()

for span in memory.get_finished_spans():
    ctx = span.get_span_context()
    print(
        json.dumps(
            {
                "trace_id": f"{ctx.trace_id:032x}",
                "span_id": f"{ctx.span_id:016x}",
                "parent": f"{span.parent.span_id:016x}" if span.parent else "",
                "name": span.name,
                "kind": span.kind.name,
                "error": span.status.status_code == StatusCode.ERROR,
                "events": len(span.events),
            }
        )
    )
