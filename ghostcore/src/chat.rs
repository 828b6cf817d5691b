//! Chat templates: rendering `tokenizer.chat_template` with minijinja (to be filled).
