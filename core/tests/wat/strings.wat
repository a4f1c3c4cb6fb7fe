;; String-ABI functions: input at __heap_base, (ptr, len) in, (ptr, len) out.
(module
  (memory (export "memory") 1)
  (global (export "__heap_base") i32 (i32.const 4096))
  (global $calls (mut i32) (i32.const 0))
  ;; Returns the input unchanged.
  (func (export "echo") (param $p i32) (param $n i32) (result i32 i32)
    (local.get $p) (local.get $n))
  ;; Upper-cases ASCII into the space after the input.
  (func (export "upper") (param $p i32) (param $n i32) (result i32 i32) (local $i i32) (local $c i32) (local $o i32)
    (local.set $o (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (i32.add (local.get $o) (local.get $n)) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (local.get $n) (i32.const 16)) (i32.const 1))))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $c (i32.load8_u (i32.add (local.get $p) (local.get $i))))
      (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
        (then (local.set $c (i32.sub (local.get $c) (i32.const 32)))))
      (i32.store8 (i32.add (local.get $o) (local.get $i)) (local.get $c))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (local.get $o) (local.get $n))
  ;; Counts its own calls in a global: a fresh instance per call always answers 1.
  (func (export "count") (param i32 i32) (result i32 i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store8 (i32.const 0) (i32.add (i32.const 48) (global.get $calls)))
    (i32.const 0) (i32.const 1))
  (func (export "bad_span") (param i32 i32) (result i32 i32)
    (i32.const 0x7fff0000) (i32.const 16))
  (func (export "huge") (param i32 i32) (result i32 i32)
    (i32.const 0) (i32.const 0x200000))
  (func (export "not_utf8") (param i32 i32) (result i32 i32)
    (i32.store8 (i32.const 0) (i32.const 0xff))
    (i32.const 0) (i32.const 1)))
