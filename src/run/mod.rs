//! Runs: the pure state machine (`state`, over the entries of `domain`, with
//! the models' `prices`), the
//! actor that performs its effects (`actor`), and the registry that starts,
//! finds and supervises one actor per open run (`registry`).

pub mod actor;
pub mod observer;
pub mod prices;
pub mod registry;
pub mod state;

pub use registry::RunRegistry;
