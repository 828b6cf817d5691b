//! model (to be filled)
