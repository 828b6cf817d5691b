//! Quantizers: f32 rows → Q4_K, Q5_K, Q6_K, Q8_0, ... (filled by the quantizer work).
