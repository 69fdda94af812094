//! The doctor's checks of an HTTP target: the endpoint accepts connections, the token and header
//! files are readable. Nothing is called (the verify URL, a GET, is probed by the doctor for
//! every kind of target).

use super::HttpConfig;
use crate::doctor::report::{Check, CheckName};
use crate::text;

/// The checks of the target.
pub(crate) async fn checks(h: &HttpConfig) -> Vec<Check> {
    let mut checks = vec![Check::reachable(CheckName::Endpoint, &h.endpoint).await];
    let files = h
        .bearer_token_file
        .iter()
        .map(|p| (CheckName::BearerToken, p))
        .chain(
            h.header_files
                .iter()
                .map(|(_, p)| (CheckName::HeaderFile, p)),
        );
    for (what, path) in files {
        checks.push(match crate::files::read_limited(path, 64 * 1024) {
            Ok(_) => Check::new(what, true, format!("{} is readable", text::path(path))),
            Err(e) => Check::new(
                what,
                false,
                format!("cannot read {}: {e}", text::path(path)),
            ),
        });
    }
    checks
}
