use super::*;
use crate::quant::GgmlType;

fn sample() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", "llama");
    w.set_u32("llama.block_count", 2);
    w.set("f", Value::F32(1.5));
    w.set("b", Value::Bool(true));
    w.set("neg", Value::I64(-7));
    w.set(
        "arr",
        Value::Array(Array::String(vec!["a".into(), "bc".into()])),
    );
    w.set(
        "nested",
        Value::Array(Array::Array(vec![
            Array::U8(vec![1, 2]),
            Array::I32(vec![-1]),
        ])),
    );
    w.set("empty", Value::Array(Array::F64(vec![])));
    let t1: Vec<u8> = (0..4 * 8).map(|i| i as u8).collect();
    w.add_tensor("t1", GgmlType::F32, &[4, 2], t1).unwrap();
    let t2 = vec![7u8; 18 * 2];
    w.add_tensor("t2", GgmlType::Q4_0, &[32, 2], t2).unwrap();
    w.to_bytes()
}

#[test]
fn write_read_round_trip() {
    let bytes = sample();
    let g = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.metadata().len(), 8);
    assert_eq!(g.metadata()[0].0, "general.architecture");
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.get_u64("llama.block_count"), Some(2));
    assert_eq!(g.get("neg").unwrap().as_i64(), Some(-7));
    assert_eq!(g.get_array("arr").unwrap().len(), 2);
    let (info, data) = g.tensor("t2").unwrap();
    assert_eq!(info.ty, GgmlType::Q4_0);
    assert_eq!(info.dims, vec![32, 2]);
    assert_eq!(data, &[7u8; 36][..]);
    assert_eq!(info.offset % 32, 0);
    // write again: identical bytes
    assert_eq!(GgufWriter::from_file(&g).to_bytes(), bytes);
}

/// Parse must fail with an error (never panic) on every truncation of a valid file.
#[test]
fn every_truncation_is_an_error() {
    let bytes = sample();
    let g = GgufFile::from_bytes(bytes.clone()).unwrap();
    let t = g.tensors().last().unwrap();
    // Past the end of the last tensor's data only alignment padding remains.
    let data_end = (g.data_offset + t.offset + t.size) as usize;
    for n in 0..data_end {
        let r = GgufFile::from_bytes(bytes[..n].to_vec());
        assert!(r.is_err(), "truncated to {n} bytes parsed");
    }
}

/// Flipping any single byte of the header must give Ok or a typed error, never a panic.
#[test]
fn byte_flips_never_panic() {
    let bytes = sample();
    let g = GgufFile::from_bytes(bytes.clone()).unwrap();
    let header_end = g.data_offset as usize;
    for i in 0..header_end {
        for v in [0x00u8, 0xff, 0x80, 0x7f] {
            let mut b = bytes.clone();
            b[i] = v;
            let _ = GgufFile::from_bytes(b);
        }
    }
}

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

#[test]
fn typed_errors() {
    let e = GgufFile::from_bytes(b"GGML\0\0\0\0".to_vec()).unwrap_err();
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
    let e = GgufFile::from_bytes(header(1, 0, 0)).unwrap_err();
    assert!(
        matches!(e, GgufError::UnsupportedVersion { version: 1, .. }),
        "{e}"
    );
    let e = GgufFile::from_bytes(header(3, u64::MAX, 0)).unwrap_err();
    assert!(matches!(e, GgufError::AbsurdCount { .. }), "{e}");
    assert!(e.to_string().contains("tensor_count"));
    // a string length far past the end
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    let e = GgufFile::from_bytes(b).unwrap_err();
    assert!(matches!(e, GgufError::Truncated { offset: 24, .. }), "{e}");
    // unknown value type
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'k');
    b.extend_from_slice(&99u32.to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    let e = GgufFile::from_bytes(b).unwrap_err();
    assert!(
        matches!(e, GgufError::UnknownValueType { id: 99, .. }),
        "{e}"
    );
    // absurd array length
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'k');
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
    let e = GgufFile::from_bytes(b).unwrap_err();
    assert!(matches!(e, GgufError::AbsurdCount { .. }), "{e}");
}

fn one_tensor(dims: &[u64], ty: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut b = header(3, 1, 0);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b't');
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(std::iter::repeat_n(0u8, data_len));
    b
}

#[test]
fn tensor_validation() {
    assert!(GgufFile::from_bytes(one_tensor(&[8], 0, 0, 32)).is_ok());
    let e = GgufFile::from_bytes(one_tensor(&[8], 0, 0, 31)).unwrap_err();
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    let e = GgufFile::from_bytes(one_tensor(&[8], 0, 16, 64)).unwrap_err();
    assert!(matches!(e, GgufError::Misaligned { .. }), "{e}");
    let e = GgufFile::from_bytes(one_tensor(&[8], 4, 0, 64)).unwrap_err();
    assert!(
        matches!(e, GgufError::UnknownTensorType { id: 4, .. }),
        "{e}"
    );
    let e = GgufFile::from_bytes(one_tensor(&[1 << 40, 1 << 40], 0, 0, 64)).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
    let e = GgufFile::from_bytes(one_tensor(&[33], 2, 0, 64)).unwrap_err();
    assert!(e.to_string().contains("block size"), "{e}");
    let e = GgufFile::from_bytes(one_tensor(&[8, 0], 0, 0, 64)).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
}

#[test]
fn overlapping_tensors_rejected() {
    let mut w = GgufWriter::new();
    w.add_tensor("a", GgmlType::F32, &[16], vec![0u8; 64])
        .unwrap();
    w.add_tensor("b", GgmlType::F32, &[16], vec![0u8; 64])
        .unwrap();
    let mut bytes = w.to_bytes();
    // rewrite b's offset (the last 8 bytes of its info) from 64 to 32
    let g = GgufFile::from_bytes(bytes.clone()).unwrap();
    let pos = (0..g.data_offset as usize - 8)
        .rev()
        .find(|&i| bytes[i..i + 8] == 64u64.to_le_bytes())
        .unwrap();
    bytes[pos..pos + 8].copy_from_slice(&32u64.to_le_bytes());
    let e = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(matches!(e, GgufError::Overlap { .. }), "{e}");
}

#[test]
fn huge_page_placement_serves_the_file_bytes() {
    let bytes = sample();
    let path = std::env::temp_dir().join(format!("ghost-placement-{}.gguf", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let mapped = GgufFile::open(&path).unwrap();
    let placed = GgufFile::open_placed(&path, Placement::HugePages).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(mapped.residency(), &WeightResidency::Mapped);
    match placed.residency() {
        WeightResidency::HugePageCopy => {
            assert_eq!(placed.bytes().as_ptr() as usize % HUGE_PAGE_BYTES, 0);
        }
        WeightResidency::MappedFallback(why) => eprintln!("huge-page copy not made: {why}"),
        other => panic!("unexpected residency {other:?}"),
    }
    assert_eq!(placed.bytes(), &bytes[..]);
    assert_eq!(
        placed.tensor("t1").unwrap().1,
        mapped.tensor("t1").unwrap().1
    );
    assert_eq!(
        placed.tensor("t2").unwrap().1,
        mapped.tensor("t2").unwrap().1
    );
    assert_eq!(
        GgufFile::from_bytes(bytes).unwrap().residency(),
        &WeightResidency::Buffer
    );
}
