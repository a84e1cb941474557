use std::fmt;

/// Everything that can go wrong in a call. A [`Error::Module`] is an answer: the module's Matrix
/// error (`{"errcode", "error"}`), which a server passes on to its client with the status of
/// [`Error::status`]. The other variants mean no answer was obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The module's error envelope: a Matrix `errcode` (`M_BAD_JSON`, `M_INVALID_PARAM`, ...) and
    /// its message, meant for people.
    #[error("{errcode}: {message}")]
    Module {
        /// The Matrix error code; match on this.
        errcode: String,
        /// The `error` text.
        message: String,
    },
    /// An input above the module's 64 MiB limit (ABI section 10); errcode `M_TOO_LARGE`.
    #[error("keyclaim: an input of {len} bytes is above the module's limit of 67108864 bytes")]
    TooLarge {
        /// The input's length.
        len: usize,
    },
    /// An operation the module does not have; errcode `M_UNKNOWN`.
    #[error("keyclaim: unknown operation {0:?}")]
    UnknownOperation(String),
    /// The module speaks another ABI version than this crate (ABI section 12).
    #[error("keyclaim: the module speaks ABI version {found}, this crate speaks version {expected}: use a keyclaim.wasm built for ABI {expected}")]
    AbiVersion {
        /// What `keyclaim_abi_version()` answered.
        found: i32,
        /// The version this crate implements.
        expected: i32,
    },
    /// The module broke the ABI: a missing export, a pointer outside memory, an answer that is
    /// not an envelope.
    #[error("keyclaim: ABI violation: {0}")]
    Abi(String),
    /// A call into the module trapped (out of memory under the cap, the Go runtime died); the
    /// instance was discarded, and the next call gets a fresh one.
    #[error("keyclaim: {export} trapped (instance discarded): {message}")]
    Trap {
        /// The export that was running.
        export: String,
        /// wasmtime's description, with what the module wrote to its console.
        message: String,
    },
    /// The module could not be compiled or instantiated.
    #[error("keyclaim: loading the module: {0}")]
    Instantiate(String),
    /// Reading a module file.
    #[error("keyclaim: reading the module: {0}")]
    Io(#[from] std::io::Error),
    /// A typed call's input could not be encoded, or its result not decoded into the types of
    /// this crate.
    #[error("keyclaim: JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The tracker's instance trapped or was lost; its state is gone.
    #[error("keyclaim: the tracker was lost with its instance")]
    TrackerLost,
}

impl Error {
    /// The Matrix errcode of this error: the module's for [`Error::Module`], `M_TOO_LARGE` for
    /// [`Error::TooLarge`], `M_UNKNOWN` for everything else.
    pub fn errcode(&self) -> &str {
        match self {
            Error::Module { errcode, .. } => errcode,
            Error::TooLarge { .. } => "M_TOO_LARGE",
            _ => "M_UNKNOWN",
        }
    }

    /// The HTTP status a server answers this error with (ABI section 6): 400 for the request
    /// errors, 413 for `M_TOO_LARGE`, 500 otherwise.
    pub fn status(&self) -> u16 {
        match self.errcode() {
            "M_NOT_JSON" | "M_BAD_JSON" | "M_INVALID_PARAM" => 400,
            "M_TOO_LARGE" => 413,
            _ => 500,
        }
    }

    /// The Matrix error body for a client, `{"errcode":"...","error":"..."}`.
    pub fn to_matrix_json(&self) -> String {
        let message = match self {
            Error::Module { message, .. } => message.clone(),
            other => other.to_string(),
        };
        serde_json::json!({"errcode": self.errcode(), "error": message}).to_string()
    }
}

/// A wrapper to print bytes that should be UTF-8.
pub(crate) struct Lossy<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}
