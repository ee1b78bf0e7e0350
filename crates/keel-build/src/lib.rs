//! `keel build`: the Dockerfile language and the build.
//!
//! Pure parts, tested without root: [`ast`] (what a Dockerfile is),
//! [`parser`] (text to [`ast::Dockerfile`], errors with file, line and
//! column), [`shell`] (docker's word expansion: `$VAR`, `${VAR:-x}`,
//! quotes and escapes), [`ignore`] (`.dockerignore` patterns).

pub mod ast;
pub mod cache;
pub mod context;
pub mod error;
pub mod fsops;
pub mod ignore;
pub mod parser;
pub mod shell;

pub use error::{Error, Result};
pub mod build;
pub mod overlay;
