//! Element properties given on the command line (`--temporal-radius 3`, `--set NAME=VALUE`):
//! parsed, checked against the element's own property specs (name, type, range, enum values)
//! and set, so a typo is one clear line instead of a GLib warning or a panic.

use anyhow::{anyhow, bail, Result};
use gst::glib;
use gst::prelude::*;

/// One property to set, as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    pub value: String,
}

impl Property {
    pub fn new(name: &str, value: impl ToString) -> Self {
        Property {
            name: name.to_string(),
            value: value.to_string(),
        }
    }
}

/// Parses `NAME=VALUE` (the value may contain `=` and spaces; it is never parsed as pipeline
/// syntax).
pub fn parse_set(kv: &str) -> Result<Property> {
    let (name, value) = kv
        .split_once('=')
        .ok_or_else(|| anyhow!("--set '{kv}' must be NAME=VALUE, e.g. --set grain-strength=0.3"))?;
    let name = name.trim();
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!("--set '{kv}': '{name}' is not a property name (letters, digits and '-')");
    }
    if value.trim().is_empty() {
        bail!("--set '{kv}' has no value");
    }
    Ok(Property::new(name, value.trim()))
}

/// Sets the properties on `element`, each checked first.
pub fn apply(element: &gst::Element, props: &[Property]) -> Result<()> {
    for p in props {
        let value = value_for(element, p)?;
        element.set_property_from_value(&p.name, &value);
    }
    Ok(())
}

fn factory_name(element: &gst::Element) -> String {
    element
        .factory()
        .map(|f| f.name().to_string())
        .unwrap_or_else(|| element.type_().name().to_string())
}

/// The value `p` sets, or why it cannot be set.
fn value_for(element: &gst::Element, p: &Property) -> Result<glib::Value> {
    let factory = factory_name(element);
    let Some(pspec) = element.find_property(&p.name) else {
        bail!("{factory} has no property '{}' (`oldfilm info` lists them)", p.name);
    };
    let flags = pspec.flags();
    if !flags.contains(glib::ParamFlags::WRITABLE) || flags.contains(glib::ParamFlags::CONSTRUCT_ONLY) {
        bail!("{factory} property '{}' cannot be set", p.name);
    }
    let value = glib::Value::deserialize_with_pspec(&p.value, &pspec).map_err(|_| {
        let expected = describe_type(&pspec);
        anyhow!("{}={}: not a valid value for {factory} ({expected})", p.name, p.value)
    })?;
    if let Some(range) = out_of_range(&pspec, &value) {
        bail!("{}={}: out of range for {factory} ({range})", p.name, p.value);
    }
    Ok(value)
}

/// `Some("min to max")` when a numeric value lies outside the property's range.
fn out_of_range(pspec: &glib::ParamSpec, value: &glib::Value) -> Option<String> {
    macro_rules! check {
        ($spec:ty, $t:ty) => {
            if let Some(s) = pspec.downcast_ref::<$spec>() {
                let v = value.get::<$t>().ok()?;
                return (v < s.minimum() || v > s.maximum()).then(|| format!("{} to {}", s.minimum(), s.maximum()));
            }
        };
    }
    check!(glib::ParamSpecDouble, f64);
    check!(glib::ParamSpecFloat, f32);
    check!(glib::ParamSpecInt, i32);
    check!(glib::ParamSpecUInt, u32);
    check!(glib::ParamSpecInt64, i64);
    check!(glib::ParamSpecUInt64, u64);
    None
}

/// What a property takes, in words: "a number from 0 to 1", "one of: none, split".
pub fn describe_type(pspec: &glib::ParamSpec) -> String {
    macro_rules! range {
        ($spec:ty, $t:ty, $what:expr) => {
            if let Some(s) = pspec.downcast_ref::<$spec>() {
                return if s.maximum() == <$t>::MAX {
                    format!("{} from {} up", $what, s.minimum())
                } else {
                    format!("{} from {} to {}", $what, s.minimum(), s.maximum())
                };
            }
        };
    }
    range!(glib::ParamSpecDouble, f64, "a number");
    range!(glib::ParamSpecFloat, f32, "a number");
    range!(glib::ParamSpecInt, i32, "a whole number");
    range!(glib::ParamSpecUInt, u32, "a whole number");
    range!(glib::ParamSpecInt64, i64, "a whole number");
    range!(glib::ParamSpecUInt64, u64, "a whole number");
    if pspec.value_type() == bool::static_type() {
        return "true or false".to_string();
    }
    if let Some(class) = glib::EnumClass::with_type(pspec.value_type()) {
        let nicks: Vec<&str> = class.values().iter().map(|v| v.nick()).collect();
        return format!("one of: {}", nicks.join(", "));
    }
    pspec.value_type().name().to_string()
}

/// A value as a user would type it: enum nicks, `true`/`false`, short numbers.
pub fn show_value(value: &glib::Value) -> String {
    if let Some((_, v)) = glib::EnumValue::from_value(value) {
        return v.nick().to_string();
    }
    if let Ok(b) = value.get::<bool>() {
        return b.to_string();
    }
    if let Ok(f) = value.get::<f64>() {
        return format!("{f}");
    }
    if let Ok(f) = value.get::<f32>() {
        return format!("{f}");
    }
    value
        .serialize()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| format!("{value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_splits_name_and_value() {
        assert_eq!(
            parse_set("grain-strength=0.2").unwrap(),
            Property::new("grain-strength", "0.2")
        );
        assert_eq!(
            parse_set("compare=side-by-side").unwrap(),
            Property::new("compare", "side-by-side")
        );
        // Only the first '=' separates; the value is never pipeline syntax.
        assert_eq!(parse_set("a=b=c").unwrap(), Property::new("a", "b=c"));
        for bad in ["grain", "=1", "a b=1", "x=", "x=  ", "x!y=1"] {
            assert!(parse_set(bad).is_err(), "{bad} accepted");
        }
    }

    fn restore() -> gst::Element {
        crate::init_for_tests();
        gst::ElementFactory::make("oldfilmrestore").build().unwrap()
    }

    #[test]
    fn values_are_checked_against_the_element() {
        let e = restore();
        apply(
            &e,
            &[Property::new("temporal-radius", 3), Property::new("compare", "split")],
        )
        .unwrap();
        assert_eq!(e.property::<u32>("temporal-radius"), 3);
        let err = |p: Property| format!("{:#}", apply(&e, &[p]).unwrap_err());
        let msg = err(Property::new("no-such-thing", 1));
        assert!(msg.contains("oldfilmrestore has no property 'no-such-thing'"), "{msg}");
        let msg = err(Property::new("temporal-radius", 20));
        assert!(msg.contains("out of range") && msg.contains("0 to 8"), "{msg}");
        let msg = err(Property::new("deflicker-strength", "lots"));
        assert!(
            msg.contains("not a valid value") && msg.contains("a number from 0 to 1"),
            "{msg}"
        );
        let msg = err(Property::new("compare", "bogus"));
        assert!(msg.contains("one of: none, split, side-by-side"), "{msg}");
        // A failed value leaves the property as it was.
        assert_eq!(e.property::<u32>("temporal-radius"), 3);
    }

    #[test]
    fn values_show_as_typed() {
        let e = restore();
        assert_eq!(show_value(&e.property_value("compare")), "none");
        assert_eq!(show_value(&e.property_value("deflicker")), "true");
        assert_eq!(show_value(&e.property_value("grain-strength")), "1");
    }
}
