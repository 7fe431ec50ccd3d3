//! JSON request bodies, read as their JSON Schema describes them: an object is an object (serde would
//! also fill a struct from an array of its fields), and a number with no fraction is an integer whether
//! it is written `5` or `5.0` (JSON Schema's `integer` takes both; serde only the first).

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Reads `bytes`, a JSON object, as a `T`, taking a whole number written with a fraction (`5.0`,
/// `1e3`) wherever an integer is expected. A body that does not read either way gets the error of the
/// first reading, which points at the line and column.
pub fn object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(serde::de::Error::custom("expected a JSON object"));
    }
    let first = match serde_json::from_slice(bytes) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
        return Err(first);
    };
    if whole_numbers_as_integers(&mut value) == 0 {
        return Err(first);
    }
    serde_json::from_value(value).map_err(|_| first)
}

/// Rewrites every float in `value` that is a whole number in the range of `i64` or `u64` as that
/// integer; says how many it rewrote.
fn whole_numbers_as_integers(value: &mut Value) -> usize {
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else {
                return 0;
            };
            // `as` saturates, so a float below `i64::MIN` does not come back equal; `u64::MAX as f64`
            // is 2^64, which saturates to `u64::MAX` and would.
            let integer = if f.fract() != 0.0 {
                None
            } else if f < 0.0 && (f as i64) as f64 == f {
                Some(Value::from(f as i64))
            } else if (0.0..u64::MAX as f64).contains(&f) {
                Some(Value::from(f as u64))
            } else {
                None
            };
            integer.map_or(0, |i| {
                *value = i;
                1
            })
        }
        Value::Array(items) => items.iter_mut().map(whole_numbers_as_integers).sum(),
        Value::Object(fields) => fields.values_mut().map(whole_numbers_as_integers).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Target {
        version: u32,
        weights: Option<std::collections::BTreeMap<String, f64>>,
    }

    #[test]
    fn whole_floats_read_as_integers_and_fractions_stay_refused() {
        let read = |text: &str| object::<Target>(text.as_bytes());
        assert_eq!(read(r#"{"version": 5041.0}"#).unwrap().version, 5041);
        assert_eq!(read(r#"{"version": 1e3}"#).unwrap().version, 1000);
        let weighted = read(r#"{"version": 2.0, "weights": {"1": 0.5}}"#).unwrap();
        assert_eq!(weighted.weights.unwrap()["1"], 0.5);
        let fraction = read(r#"{"version": 1.5}"#).unwrap_err().to_string();
        assert!(fraction.contains("line 1 column"), "{fraction}");
        assert!(read(r#"{"version": -1.0}"#).is_err());
        assert!(read(r#"{"version": 1e300}"#).is_err());
        let huge = |text: &str| object::<std::collections::BTreeMap<String, u64>>(text.as_bytes());
        assert_eq!(
            huge(r#"{"n": 1e19}"#).unwrap()["n"],
            10_000_000_000_000_000_000
        );
        assert!(
            huge(r#"{"n": 1.8446744073709552e19}"#).is_err(),
            "2^64 is past u64::MAX"
        );
        assert!(read("{").is_err());
        // serde would fill the struct from an array of its fields.
        assert!(read("[3]").is_err());
        assert_eq!(read(" \n{\"version\": 3}").unwrap().version, 3);
    }
}
