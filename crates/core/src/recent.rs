//! What a thread made last of a JSON value, kept so that the same value (a
//! tool's schema, sent call after call) is not worked on again.

use std::cell::RefCell;
use std::thread::LocalKey;

use serde_json::Value;

/// The values a thread saw last, each with what was made of it, most
/// recent first.
pub(crate) type Recent<T> = RefCell<Vec<(Value, T)>>;

/// Calls `f` with what `make` makes of `key`, made only if `key` is not
/// among the last `keep` values `recent` saw.
pub(crate) fn with_recent<T, R>(
    recent: &'static LocalKey<Recent<T>>,
    keep: usize,
    key: &Value,
    make: impl FnOnce(&Value) -> T,
    f: impl FnOnce(&T) -> R,
) -> R {
    recent.with(|kept| {
        let mut kept = kept.borrow_mut();
        match kept.iter().position(|(known, _)| known == key) {
            Some(0) => {}
            Some(at) => kept[..=at].rotate_right(1),
            None => {
                let made = make(key);
                kept.truncate(keep - 1);
                kept.insert(0, (key.clone(), made));
            }
        }
        f(&kept[0].1)
    })
}
