;; Numeric exports and misbehaving ones.
(module
  (memory (export "memory") 1)
  (func $gcd (export "gcd") (param $a i32) (param $b i32) (result i32) (local $t i32)
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $b)))
      (local.set $t (i32.rem_u (local.get $a) (local.get $b)))
      (local.set $a (local.get $b))
      (local.set $b (local.get $t))
      (br $next)))
    (local.get $a))
  (func (export "mul_add") (param i64 i64 i64) (result i64)
    (i64.add (i64.mul (local.get 0) (local.get 1)) (local.get 2)))
  (func (export "half") (param f64) (result f64) (f64.mul (local.get 0) (f64.const 0.5)))
  (func (export "divmod") (param i32 i32) (result i32 i32)
    (i32.div_s (local.get 0) (local.get 1)) (i32.rem_s (local.get 0) (local.get 1)))
  (func (export "spin") (result i32) (loop $forever (br $forever)) (i32.const 0))
  ;; Grows memory 1 MiB at a time until refused; returns the pages it reached.
  (func (export "grow") (result i32)
    (block $done (loop $more
      (br_if $done (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
      (br $more)))
    (memory.size))
  ;; Burns about 10 million loop iterations.
  (func (export "burn") (result i32) (local $i i32)
    (loop $more
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 10000000))))
    (local.get $i))
  (func (export "takes_ref") (param externref) (result i32) (i32.const 0)))
