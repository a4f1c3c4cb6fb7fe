;; Laid out like a rustc module (17 pages, data above a 1 MiB stack) to check that a call never
;; sees what an earlier call wrote, whatever the pool's reset strategy. `touch` returns the sum
;; of what it finds at a few places (0 in a fresh instance), then dirties them all: a global,
;; the stack's top, the data, the last initial page, and a page it grows into.
(module
  (memory 17)
  (global $g (mut i32) (i32.const 0))
  (data (i32.const 1048576) "\00\00\00\00")
  (func (export "touch") (result i32) (local $sum i32) (local $grown i32)
    (local.set $sum (global.get $g))
    (local.set $sum (i32.add (local.get $sum) (i32.load (i32.const 0))))
    (local.set $sum (i32.add (local.get $sum) (i32.load (i32.const 1048568))))
    (local.set $sum (i32.add (local.get $sum) (i32.load (i32.const 1048576))))
    (local.set $sum (i32.add (local.get $sum) (i32.load (i32.const 1114108))))
    ;; memory.size is 17 pages in a fresh instance: a larger size is state carried over.
    (local.set $sum (i32.add (local.get $sum) (i32.sub (memory.size) (i32.const 17))))
    (local.set $grown (i32.mul (memory.grow (i32.const 2)) (i32.const 65536)))
    (local.set $sum (i32.add (local.get $sum) (i32.load (i32.add (local.get $grown) (i32.const 70000)))))
    (global.set $g (i32.const 1))
    (i32.store (i32.const 0) (i32.const 2))
    (i32.store (i32.const 1048568) (i32.const 4))
    (i32.store (i32.const 1048576) (i32.const 8))
    (i32.store (i32.const 1114108) (i32.const 16))
    (i32.store (i32.add (local.get $grown) (i32.const 70000)) (i32.const 32))
    (local.get $sum)))
