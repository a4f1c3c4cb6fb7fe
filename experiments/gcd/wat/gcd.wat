;; Numeric export gcd(i32, i32) -> i32 with no linear memory, no table and no globals: the
;; least a fresh instance can cost. Euclid on absolute values, as the C sample.
(module
  (func (export "gcd") (param $a i32) (param $b i32) (result i32) (local $t i32)
    (if (i32.lt_s (local.get $a) (i32.const 0))
      (then (local.set $a (i32.sub (i32.const 0) (local.get $a)))))
    (if (i32.lt_s (local.get $b) (i32.const 0))
      (then (local.set $b (i32.sub (i32.const 0) (local.get $b)))))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $b)))
        (local.set $t (i32.rem_u (local.get $a) (local.get $b)))
        (local.set $a (local.get $b))
        (local.set $b (local.get $t))
        (br $next)))
    (local.get $a)))
