//! `account_import` answers: any body is a success (`ErrorCode` 0) or an error that is the
//! API's or the vendor's.

#![no_main]

use account_sync::chat::answer;
use account_sync::chat::{Api, ChatError};
use account_sync_fuzz::{check_answer_error, error_code};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match answer::import(body) {
        Ok(()) => assert_eq!(error_code(body), Some(0), "a success only from ErrorCode 0"),
        Err(e) => {
            check_answer_error(&e, Api::AccountImport);
            if let ChatError::Vendor { code, .. } = e {
                assert_eq!(error_code(body), Some(code));
            }
        }
    }
});
