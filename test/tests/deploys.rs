//! Many deploys at once: all are accepted, deploys of one image share one pull, task starts
//! are bounded (`--parallel-starts`), every function answers, and a name deployed already
//! still gets 409.

use serde_json::json;
use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::{app, Containerd, Engine, Registry};

#[test]
fn parallel_deploys_share_one_pull_and_all_answer() {
    let c = Containerd::start().expect("containerd");
    let e = Engine::start(&c, &["--parallel-starts", "2"]).expect("engine");
    let reg = Registry::start().unwrap();
    let image = reg
        .push_wasm(
            &app("gcd"),
            &ImageSpec::classic("gcd.wasm"),
            "gcd:many",
            false,
        )
        .unwrap();
    let n = 12;
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..n)
            .map(|i| {
                let (e, image) = (&e, &image);
                s.spawn(move || {
                    e.post(
                        "/function/deploy",
                        &json!({"function_name": format!("p{i}"), "function_image": image,
                                "wasi_cap": false, "export": "gcd"}),
                    )
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (status, text) in &statuses {
        assert_eq!(*status, 200, "{text}\n{}", e.log());
    }
    let pulls = e.log().matches("pulling ").count();
    assert_eq!(
        pulls,
        1,
        "one pull for {n} deploys of one image:\n{}",
        e.log()
    );
    for i in 0..n {
        let (status, v) = e.invoke(&format!("p{i}"), json!([12 * (i + 1), 18 * (i + 1)]));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["result"], (6 * (i + 1)).to_string());
    }
    let (status, text) = e.post(
        "/function/deploy",
        &json!({"function_name": "p0", "function_image": image, "wasi_cap": false,
                "export": "gcd"}),
    );
    assert_eq!(status, 409, "{text}");
}
