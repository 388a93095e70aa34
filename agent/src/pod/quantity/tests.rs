#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use proptest::prelude::*;

use super::*;

#[test]
fn kubernetes_examples() {
    assert_eq!(parse_cpu("500m"), Ok(MilliCpu(500)));
    assert_eq!(parse_cpu("1"), Ok(MilliCpu(1000)));
    assert_eq!(parse_cpu("0.5"), Ok(MilliCpu(500)));
    assert_eq!(parse_cpu(".5"), Ok(MilliCpu(500)));
    assert_eq!(parse_cpu("1."), Ok(MilliCpu(1000)));
    assert_eq!(parse_cpu("+2"), Ok(MilliCpu(2000)));
    assert_eq!(parse_cpu("0.1m"), Ok(MilliCpu(1)), "rounded up, as MilliValue does");
    assert_eq!(parse_cpu("100u"), Ok(MilliCpu(1)));
    assert_eq!(parse_cpu("2e-3"), Ok(MilliCpu(2)));
    assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
    assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
    assert_eq!(parse_bytes("128974848"), Ok(128_974_848));
    assert_eq!(parse_bytes("129e6"), Ok(129_000_000));
    assert_eq!(parse_bytes("129E6"), Ok(129_000_000), "E followed by digits is an exponent");
    assert_eq!(parse_bytes("1E"), Ok(1_000_000_000_000_000_000), "a lone E is exa");
    assert_eq!(parse_bytes("123Mi"), Ok(123 << 20));
    assert_eq!(parse_bytes("1Ki"), Ok(1024));
    assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
    assert_eq!(parse_bytes("0.5"), Ok(1), "rounded up, as Value does");
    assert_eq!(parse_bytes("0"), Ok(0));
    assert_eq!(parse_bytes("-0"), Ok(0));
    assert_eq!(parse_bytes("000012k"), Ok(12_000));
    assert_eq!(parse_bytes("1e+3"), Ok(1000));
    assert_eq!(parse_bytes("16Ei"), Err(QuantityError::TooLarge), "2^64 does not fit");
    assert_eq!(parse_bytes("15Ei"), Ok(15 << 60));
}

#[test]
fn garbage_is_rejected() {
    assert_eq!(parse_bytes(""), Err(QuantityError::Empty));
    assert_eq!(parse_bytes("."), Err(QuantityError::NoDigits));
    assert_eq!(parse_bytes("Mi"), Err(QuantityError::NoDigits));
    assert_eq!(parse_bytes("64MB"), Err(QuantityError::Suffix("MB".into())));
    assert_eq!(parse_bytes("1K"), Err(QuantityError::Suffix("K".into())), "kilo is lowercase k");
    assert_eq!(parse_bytes("1e"), Err(QuantityError::Suffix("e".into())));
    assert_eq!(parse_bytes("1e+"), Err(QuantityError::Suffix("e+".into())));
    assert_eq!(parse_bytes("1.2.3"), Err(QuantityError::Suffix(".3".into())));
    assert_eq!(parse_bytes(" 1"), Err(QuantityError::NoDigits));
    assert_eq!(parse_bytes("1 "), Err(QuantityError::Suffix(" ".into())));
    assert_eq!(parse_bytes("-1"), Err(QuantityError::Negative));
    assert_eq!(parse_cpu("-500m"), Err(QuantityError::Negative));
    assert_eq!(parse_bytes("1e30"), Err(QuantityError::TooLarge));
    assert_eq!(parse_bytes("1e99999999999"), Err(QuantityError::TooLarge));
    assert_eq!(parse_bytes(&"1".repeat(39)), Err(QuantityError::TooPrecise));
    assert_eq!(parse_bytes("1e-99999"), Ok(1), "tiny but positive rounds up");
    assert_eq!(parse_bytes("1e-99999999999"), Err(QuantityError::TooPrecise));
}

#[test]
fn formats_are_exact_and_short() {
    assert_eq!(format_cpu(MilliCpu(500)), "500m");
    assert_eq!(format_cpu(MilliCpu(2000)), "2");
    assert_eq!(format_bytes(64 << 20), "64Mi");
    assert_eq!(format_bytes(1_000_000_000), "1G");
    assert_eq!(format_bytes(1536 << 20), "1536Mi");
    assert_eq!(format_bytes(128_974_848), "123Mi");
    assert_eq!(format_bytes(129_000_000), "129M");
    assert_eq!(format_bytes(1001), "1001");
    assert_eq!(format_bytes(0), "0");
}

proptest! {
    #[test]
    fn cpu_round_trips(milli in any::<u64>()) {
        prop_assert_eq!(parse_cpu(&format_cpu(MilliCpu(milli))), Ok(MilliCpu(milli)));
    }

    #[test]
    fn bytes_round_trip(bytes in any::<u64>()) {
        prop_assert_eq!(parse_bytes(&format_bytes(bytes)), Ok(bytes));
    }

    #[test]
    fn suffixes_multiply(n in 0u64..1_000_000, suffix in 0usize..12) {
        let (text, unit): (&str, u128) = [
            ("", 1), ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000),
            ("P", 1_000_000_000_000_000), ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30),
            ("Ti", 1 << 40), ("Pi", 1 << 50), ("Ei", 1 << 60),
        ][suffix];
        let expected = u64::try_from(u128::from(n) * unit).map_err(|_| QuantityError::TooLarge);
        prop_assert_eq!(parse_bytes(&format!("{n}{text}")), expected);
    }

    #[test]
    fn fractions_round_up(int in 0u64..1000, frac in 0u64..1000) {
        // `int.frac` with three fraction digits is exactly int*1000+frac millicores.
        prop_assert_eq!(parse_cpu(&format!("{int}.{frac:03}")), Ok(MilliCpu(int * 1000 + frac)));
        // One more digit rounds up to the next millicore unless it is zero.
        let expected = int * 1000 + frac + 1;
        prop_assert_eq!(parse_cpu(&format!("{int}.{frac:03}1")), Ok(MilliCpu(expected)));
    }

    #[test]
    fn never_panics(text in ".{0,40}") {
        let _ = parse_bytes(&text);
        let _ = parse_cpu(&text);
    }

    #[test]
    fn never_panics_on_number_like_input(text in "[-+]?[0-9]{0,45}(\\.[0-9]{0,45})?([eE][-+]?[0-9]{0,12}|[numkMGTPE]i?)?") {
        let _ = parse_bytes(&text);
        let _ = parse_cpu(&text);
    }
}
