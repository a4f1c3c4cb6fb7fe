;; String ABI `chain`: calls the deployed function `echo-string` with its own input (the args
;; JSON) through the `wasmengine.call` import and returns `chain>` and the answer; when the
;; callee fails, `chain!STATUS ` and the error JSON. Deploy it with "calls": ["echo-string"].
(module
  (import "wasmengine" "call"
    (func $call (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; The input goes at __heap_base (the engine writes it there, growing memory if needed).
  (global (export "__heap_base") i32 (i32.const 1024))
  (data (i32.const 16) "echo-string")
  (data (i32.const 32) "chain>chain!")
  (func $digit (param $at i32) (param $v i32)
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (local.get $v))))
  (func (export "chain") (param $in i32) (param $len i32) (result i32 i32)
    (local $out i32) (local $status i32) (local $cap i32) (local $got i32)
    ;; The answer goes after the input, behind a 6-byte prefix, with 1 MiB of room.
    (local.set $out (i32.and (i32.add (i32.add (local.get $in) (local.get $len)) (i32.const 15))
                             (i32.const -8)))
    (drop (memory.grow (i32.const 16)))
    (local.set $cap (i32.sub (i32.mul (memory.size) (i32.const 65536))
                             (i32.add (local.get $out) (i32.const 10))))
    (local.set $status
      (call $call (i32.const 16) (i32.const 11)                      ;; callee
                  (local.get $in) (local.get $len)                   ;; args: our input
                  (i32.add (local.get $out) (i32.const 10)) (local.get $cap)
                  (i32.const 8)))                                    ;; answer length at 8
    (local.set $got (i32.load (i32.const 8)))
    (if (i32.gt_u (local.get $got) (local.get $cap)) (then (local.set $got (local.get $cap))))
    (if (i32.eq (local.get $status) (i32.const 200))
      (then
        ;; "chain>" right before the answer
        (memory.copy (i32.add (local.get $out) (i32.const 4)) (i32.const 32) (i32.const 6))
        (return (i32.add (local.get $out) (i32.const 4)) (i32.add (local.get $got) (i32.const 6)))))
    ;; "chain!NNN " right before the error
    (memory.copy (local.get $out) (i32.const 38) (i32.const 6))
    (call $digit (i32.add (local.get $out) (i32.const 6)) (i32.div_u (local.get $status) (i32.const 100)))
    (call $digit (i32.add (local.get $out) (i32.const 7))
      (i32.rem_u (i32.div_u (local.get $status) (i32.const 10)) (i32.const 10)))
    (call $digit (i32.add (local.get $out) (i32.const 8)) (i32.rem_u (local.get $status) (i32.const 10)))
    (i32.store8 (i32.add (local.get $out) (i32.const 9)) (i32.const 32))
    (local.get $out) (i32.add (local.get $got) (i32.const 10))))
