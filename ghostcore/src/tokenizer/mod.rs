//! tokenizer (to be filled)
