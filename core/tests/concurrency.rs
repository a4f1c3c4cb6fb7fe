//! Many threads calling one function at once.

mod common;

use common::*;
use serde_json::json;

#[test]
fn concurrent_calls_on_one_module_are_independent() {
    let rt = runtime();
    let upper = load(&rt, &wat("strings"), "upper", None);
    let count = load(&rt, &wat("strings"), "count", None);
    let argv = load(&rt, &wat("argv_env"), "argv_env", None);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (upper, count, argv) = (&upper, &count, &argv);
            s.spawn(move || {
                for i in 0..200 {
                    let word = format!("t{t}-call{i}");
                    assert_eq!(
                        upper.call(&json!([word])).unwrap(),
                        format!("[\"{}\"]", word.to_uppercase())
                    );
                    assert_eq!(count.call(&json!({})).unwrap(), "1");
                    assert_eq!(argv.call(&json!([word])).unwrap(), word);
                }
            });
        }
    });
}
