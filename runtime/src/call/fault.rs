//! What went wrong with one call to a source, typed: a [`FailureKind`] and its detail ([`Fault`]).
//! Every path that calls a plugin (in place, on its threads, in its runner) ends in one, and the
//! source's health records it by one rule ([`SourceHandle::record`]). The server turns it into a
//! status in one place.

use tributary_plugin_api::{contract, ErrorKind, PluginError};

use super::{CallError, SourceHandle};

/// How a source failed during a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The plugin returned an error of this kind (a caught panic included).
    Plugin(ErrorKind),
    /// A call took longer than the source timeout or the request's deadline.
    Timeout,
    /// The source is backing off after timeouts; no call was made.
    Unhealthy,
    /// The source has its maximum of calls in flight; no call was made.
    Overloaded,
    /// The answer broke the listing contract (order, seek, size, identifiers).
    Contract,
}

impl FailureKind {
    /// The name clients and metrics see: a plugin error kind's name, or `timeout`, `unhealthy`,
    /// `overloaded`, `contract_violation`.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Plugin(kind) => kind.name(),
            FailureKind::Timeout => "timeout",
            FailureKind::Unhealthy => "unhealthy",
            FailureKind::Overloaded => "overloaded",
            FailureKind::Contract => "contract_violation",
        }
    }

    /// Whether a failure of this kind says something of the source's health. Refusals without a
    /// call (`unhealthy`, `overloaded`, `starting`) and answers about the request (`not_found`,
    /// `invalid_argument`, `unsupported`) do not; timeouts are recorded on the plugin's own clock
    /// when the call overruns, not here.
    fn counts_against_the_source(self) -> bool {
        match self {
            FailureKind::Contract => true,
            FailureKind::Plugin(k) => ![
                ErrorKind::NotFound,
                ErrorKind::InvalidArgument,
                ErrorKind::Unsupported,
                ErrorKind::Starting,
            ]
            .contains(&k),
            FailureKind::Timeout | FailureKind::Unhealthy | FailureKind::Overloaded => false,
        }
    }
}

/// One call's failure: its kind and the detail to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FailureKind,
    pub message: String,
}

impl Fault {
    /// An answer that broke the contract.
    pub fn contract(message: impl Into<String>) -> Fault {
        Fault {
            kind: FailureKind::Contract,
            message: message.into(),
        }
    }

    /// A plugin's error; an error that itself breaks the contract (a message too long or not
    /// UTF-8) is a contract violation.
    pub fn from_plugin(error: PluginError) -> Fault {
        match contract::check_error(&error) {
            Ok(()) => Fault {
                kind: FailureKind::Plugin(error.kind),
                message: error.message.into_string(),
            },
            Err(v) => Fault::contract(v.into_message()),
        }
    }
}

impl From<CallError> for Fault {
    /// A call that produced nothing.
    fn from(error: CallError) -> Fault {
        Fault {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl SourceHandle {
    /// Records in the source's history how a call it answered ended (see
    /// [`FailureKind::counts_against_the_source`] for what is left out).
    pub fn record(&self, outcome: Result<(), &Fault>) {
        match outcome {
            Ok(()) => self.health.record_outcome(Ok(())),
            Err(fault) if fault.kind.counts_against_the_source() => self
                .health
                .record_outcome(Err((fault.kind.name(), &fault.message))),
            Err(_) => {}
        }
    }
}
