//! The classification of transaction errors (librdkafka's flags and codes, as its EndTxn, AddPartitionsToTxn
//! and InitProducerId handlers set them).

use rdkafka::types::RDKafkaErrorCode as Code;

use super::*;

const RETRIABLE: Flags = Flags {
    fatal: false,
    abortable: false,
    retriable: true,
};
const ABORTABLE: Flags = Flags {
    fatal: false,
    abortable: true,
    retriable: false,
};
const FATAL: Flags = Flags {
    fatal: true,
    abortable: false,
    retriable: false,
};

#[test]
fn classes_follow_librdkafkas_flags() {
    // A commit that outlasted its call timeout: "retry call to resume".
    assert_eq!(
        ErrorClass::of(Code::OperationTimedOut, RETRIABLE),
        ErrorClass::Retriable
    );
    // EndTxn answered REQUEST_TIMED_OUT (not in librdkafka's retry list) or
    // INVALID_PRODUCER_ID_MAPPING: the transaction must be aborted.
    for code in [Code::RequestTimedOut, Code::InvalidProducerIdMapping] {
        assert_eq!(ErrorClass::of(code, ABORTABLE), ErrorClass::Abortable);
    }
    // Fenced; INVALID_TXN_STATE (fatal in librdkafka's AddPartitionsToTxn handler).
    for code in [Code::Fenced, Code::InvalidTransactionalState] {
        assert_eq!(ErrorClass::of(code, FATAL), ErrorClass::Fatal);
    }
    // Fatal wins over the other flags; abortable over retriable.
    let all = Flags {
        fatal: true,
        abortable: true,
        retriable: true,
    };
    assert_eq!(ErrorClass::of(Code::Fenced, all), ErrorClass::Fatal);
    let both = Flags {
        fatal: false,
        abortable: true,
        retriable: true,
    };
    assert_eq!(ErrorClass::of(Code::State, both), ErrorClass::Abortable);
}

#[test]
fn an_error_without_a_hint_stops() {
    assert_eq!(
        ErrorClass::of(Code::State, Flags::default()),
        ErrorClass::Fatal
    );
}

#[test]
fn a_broker_without_transactions_is_unsupported_whatever_the_flags() {
    // librdkafka: "EndTxnRequest (KIP-98) not supported by broker", flagged retriable.
    assert_eq!(
        ErrorClass::of(Code::UnsupportedFeature, RETRIABLE),
        ErrorClass::Unsupported
    );
    // An EndTxn answered UNSUPPORTED_VERSION is abortable to librdkafka.
    assert_eq!(
        ErrorClass::of(Code::UnsupportedVersion, ABORTABLE),
        ErrorClass::Unsupported
    );
    for code in [
        Code::TransactionalIdAuthorizationFailed,
        Code::ClusterAuthorizationFailed,
    ] {
        assert_eq!(ErrorClass::of(code, FATAL), ErrorClass::Unsupported);
    }
    assert_eq!(ErrorClass::Unsupported.label(), "fatal");
}

#[test]
fn undelivered_records_abort_unless_the_producer_failed() {
    let refused = KafkaError::MessageProduction(Code::TopicAuthorizationFailed);
    let e = CallError::undelivered(&refused, None);
    assert_eq!((e.stage, e.class), (Stage::Produce, ErrorClass::Abortable));
    let fenced = CallError::undelivered(&refused, Some((Code::Fenced, "fenced".into())));
    assert_eq!(fenced.class, ErrorClass::Fatal);
    assert!(fenced.reason.contains("fenced"), "{}", fenced.reason);
    let denied = CallError::undelivered(
        &refused,
        Some((Code::TransactionalIdAuthorizationFailed, "denied".into())),
    );
    assert_eq!(denied.class, ErrorClass::Unsupported);
}

#[test]
fn errors_outside_the_transactional_api_have_no_hint_and_stop() {
    let e = KafkaError::SetPartitionOffset(Code::InvalidArgument);
    assert_eq!(
        CallError::classify(Stage::SendOffsets, &e).class,
        ErrorClass::Fatal
    );
}

#[test]
fn failures_say_what_to_do() {
    let e = CallError {
        stage: Stage::Commit,
        class: ErrorClass::Unsupported,
        reason: "EndTxnRequest (KIP-98) not supported by broker".into(),
    };
    let text = e.clone().stop().to_string();
    assert!(text.contains("does not support transactions"), "{text}");
    assert!(text.contains("--delivery at-least-once"), "{text}");
    assert!(text.contains("commit: EndTxnRequest"), "{text}");
    let fenced = CallError {
        class: ErrorClass::Fatal,
        ..e
    };
    assert!(matches!(fenced.stop(), TxnFailure::Fatal(_)));
}
