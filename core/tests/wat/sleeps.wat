;; A WASI command that waits in poll_oneoff; argv[0]'s first byte picks the wait, and stdout
;; gets the number of events poll_oneoff reported (one digit):
;; 'r' relative monotonic 60 s; 'a' absolute monotonic, now + 60 s; 'w' absolute realtime,
;; now + 60 s; 's' relative 30 ms; 'm' two clocks, 30 ms and 60 s; 'f' a 60 s clock and a
;; write on stdout (ready at once); 'z' no subscriptions (errno 28 becomes exit 28).
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  ;; A clock subscription at $at: userdata, tag 0, clock id, timeout, flags.
  (func $clock_sub (param $at i32) (param $id i32) (param $timeout i64) (param $flags i32)
    (i64.store (local.get $at) (i64.const 7))
    (i32.store8 (i32.add (local.get $at) (i32.const 8)) (i32.const 0))
    (i32.store (i32.add (local.get $at) (i32.const 16)) (local.get $id))
    (i64.store (i32.add (local.get $at) (i32.const 24)) (local.get $timeout))
    (i64.store (i32.add (local.get $at) (i32.const 32)) (i64.const 0))
    (i32.store16 (i32.add (local.get $at) (i32.const 40)) (local.get $flags)))
  (func $now (param $id i32) (result i64)
    (drop (call $clock (local.get $id) (i64.const 0) (i32.const 128)))
    (i64.load (i32.const 128)))
  (func (export "_start") (local $op i32) (local $n i32) (local $errno i32)
    (drop (call $args_sizes (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 64) (i32.const 1024)))
    (local.set $op (i32.load8_u (i32.load (i32.const 64))))
    (local.set $n (i32.const 1))
    (if (i32.eq (local.get $op) (i32.const 114)) (then      ;; r
      (call $clock_sub (i32.const 256) (i32.const 1) (i64.const 60000000000) (i32.const 0))))
    (if (i32.eq (local.get $op) (i32.const 97)) (then       ;; a
      (call $clock_sub (i32.const 256) (i32.const 1)
        (i64.add (call $now (i32.const 1)) (i64.const 60000000000)) (i32.const 1))))
    (if (i32.eq (local.get $op) (i32.const 119)) (then      ;; w
      (call $clock_sub (i32.const 256) (i32.const 0)
        (i64.add (call $now (i32.const 0)) (i64.const 60000000000)) (i32.const 1))))
    (if (i32.eq (local.get $op) (i32.const 115)) (then      ;; s
      (call $clock_sub (i32.const 256) (i32.const 1) (i64.const 30000000) (i32.const 0))))
    (if (i32.eq (local.get $op) (i32.const 109)) (then      ;; m
      (call $clock_sub (i32.const 256) (i32.const 1) (i64.const 30000000) (i32.const 0))
      (call $clock_sub (i32.const 304) (i32.const 1) (i64.const 60000000000) (i32.const 0))
      (local.set $n (i32.const 2))))
    (if (i32.eq (local.get $op) (i32.const 102)) (then      ;; f
      (call $clock_sub (i32.const 256) (i32.const 1) (i64.const 60000000000) (i32.const 0))
      (i64.store (i32.const 304) (i64.const 8))
      (i32.store8 (i32.const 312) (i32.const 2))
      (i32.store (i32.const 320) (i32.const 1))
      (local.set $n (i32.const 2))))
    (if (i32.eq (local.get $op) (i32.const 122)) (then      ;; z
      (local.set $n (i32.const 0))))
    (local.set $errno
      (call $poll (i32.const 256) (i32.const 512) (local.get $n) (i32.const 1020)))
    (if (local.get $errno) (then (call $exit (local.get $errno))))
    ;; stdout: the event count as one digit and a newline
    (i32.store8 (i32.const 40) (i32.add (i32.load (i32.const 1020)) (i32.const 48)))
    (i32.store8 (i32.const 41) (i32.const 10))
    (i32.store (i32.const 8) (i32.const 40))
    (i32.store (i32.const 12) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))
