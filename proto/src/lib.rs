//! Spanline's own protobuf messages. OTLP types come from the `opentelemetry-proto` crate; this crate
//! only holds what Spanline defines itself, starting with the dead-letter envelope.

/// `spanline.v1` messages.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/spanline.v1.rs"));
}

pub use v1::{DeadLetter, DeadLetterSource, PayloadKind, Stage};

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn dead_letter_round_trips() {
        let letter = DeadLetter {
            payload_kind: PayloadKind::OtlpProto as i32,
            payload: vec![1, 2, 3],
            stage: Stage::Index as i32,
            error_type: "mapper_parsing_exception".into(),
            reason: "failed to parse field [tags]".into(),
            source_topic: "otlp_spans".into(),
            source_partition: 3,
            source_offset: 42,
            target_index: "jaeger-span-2026-11-25".into(),
            dead_lettered_at_unix_nano: 1,
            span_count: 1,
            ..Default::default()
        };
        let bytes = letter.encode_to_vec();
        let back = DeadLetter::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(back, letter);
        assert_eq!(back.stage(), Stage::Index);
    }

    #[test]
    fn an_envelope_read_as_its_source_keeps_the_coordinates() {
        let letter = DeadLetter {
            payload: vec![9; 4096],
            source_topic: "otlp_spans".into(),
            source_partition: 3,
            source_offset: 42,
            redriven_topic: "otlp_spans_dlq".into(),
            redriven_partition: 1,
            redriven_offset: 7,
            redrives: 2,
            ..Default::default()
        };
        let source = DeadLetterSource::decode(letter.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(
            source,
            DeadLetterSource { source_topic: "otlp_spans".into(), source_partition: 3, source_offset: 42, redrives: 2 }
        );
    }
}
