;; WASI commands that misbehave; the function name picks the behaviour via argv[0].
;; argv[0] first byte: 'e' exit 7 after writing to stderr, 's' spin forever,
;; 'b' write 64 KiB to stdout 20 times, 't' trap (unreachable), 'l' write 64 KiB to stderr
;; 20 times (exit 9 if a write fails or is short), then as 'e'.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 32) "going away")
  (func (export "_start") (local $i i32) (local $op i32)
    (drop (call $args_sizes (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 64) (i32.const 1024)))
    (local.set $op (i32.load8_u (i32.load (i32.const 64))))
    (if (i32.eq (local.get $op) (i32.const 108)) (then
      (i32.store (i32.const 8) (i32.const 65536))
      (i32.store (i32.const 12) (i32.const 65536))
      (loop $more
        (if (i32.or
              (call $fd_write (i32.const 2) (i32.const 8) (i32.const 1) (i32.const 16))
              (i32.ne (i32.load (i32.const 16)) (i32.const 65536)))
          (then (call $exit (i32.const 9))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $more (i32.lt_u (local.get $i) (i32.const 20))))
      (local.set $op (i32.const 101))))
    (if (i32.eq (local.get $op) (i32.const 101)) (then
      (i32.store (i32.const 8) (i32.const 32))
      (i32.store (i32.const 12) (i32.const 10))
      (drop (call $fd_write (i32.const 2) (i32.const 8) (i32.const 1) (i32.const 16)))
      (call $exit (i32.const 7))))
    (if (i32.eq (local.get $op) (i32.const 115)) (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $op) (i32.const 98)) (then
      (i32.store (i32.const 8) (i32.const 65536))
      (i32.store (i32.const 12) (i32.const 65536))
      (loop $more
        (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $more (i32.lt_u (local.get $i) (i32.const 20))))))
    (if (i32.eq (local.get $op) (i32.const 116)) (then unreachable))))
