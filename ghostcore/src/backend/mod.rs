//! backend (to be filled)
