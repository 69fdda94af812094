//! The doctor's check of a command target: the program is there.

use std::path::Path;

use super::ExecConfig;
use crate::doctor::report::{Check, CheckName};
use crate::text;

/// Whether the command's program is found (an absolute path, or in `$PATH`).
pub(crate) fn check(e: &ExecConfig) -> Check {
    let prog = &e.argv[0];
    let found = if prog.contains('/') {
        Path::new(prog).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(prog).is_file()))
    };
    let prog = text::value(prog);
    if found {
        Check::new(CheckName::Command, true, format!("{prog} is there"))
    } else {
        Check::new(
            CheckName::Command,
            false,
            format!("{prog} is not found (absolute path or $PATH)"),
        )
    }
}
