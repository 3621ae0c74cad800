//! Runs: the journal entries (`event`), the pure state machine (`state`), the
//! actor that performs its effects (`actor`), and the registry that starts,
//! finds and supervises one actor per open run (`registry`).

pub mod actor;
pub mod event;
pub mod registry;
pub mod state;

pub use registry::RunRegistry;
