//! Spin 1's `outbound-redis`: every call names the server's address (`redis://host:port`, in
//! `allowed_outbound_hosts`); a connection is opened once per address and run and kept for the
//! instance's life. Results are `expected<_, error>` where `error` is a bare enum, so the payload sits
//! at its own alignment: 1 for `unit`, 4 for lists, 8 for `s64`.

use super::imports::{expected_at, guest, log};
use super::memory::{pair, Guest};
use super::Spin1State;
use crate::host::spin::redis::{connect, Connection};
use redis::Value;
use wasmtime::{Caller, Linker};

/// The `error` enum's one failure.
const ERROR: &[u8] = &[1];

/// Runs `command` on the connection to `address`, opening it on first use.
async fn run<T: redis::FromRedisValue>(
    caller: &mut Caller<'_, Spin1State>,
    address: &str,
    what: &str,
    command: redis::Cmd,
) -> Option<T> {
    if !caller.data().redis.contains_key(address) {
        let policy = caller.data().policy.clone();
        match connect(policy, address).await {
            Ok(connection) => {
                caller
                    .data_mut()
                    .redis
                    .insert(address.to_string(), connection);
            }
            Err(e) => {
                log(caller, "outbound-redis", what, &format!("{e:?}"));
                return None;
            }
        }
    }
    let Connection { redis, timeout, .. } = caller.data().redis.get(address)?;
    let (mut redis, timeout) = (redis.clone(), *timeout);
    match tokio::time::timeout(timeout, command.query_async::<T>(&mut redis)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            log(caller, "outbound-redis", what, &e);
            None
        }
        Err(_) => {
            log(caller, "outbound-redis", what, &"the command timed out");
            None
        }
    }
}

/// The flattened `redis-result` list of a reply (arrays are spread), 16-byte elements.
async fn results(
    caller: &mut Caller<'_, Spin1State>,
    guest: &Guest,
    value: Value,
) -> wasmtime::Result<(i32, i32)> {
    let mut flat = Vec::new();
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(items) | Value::Set(items) => pending.extend(items.into_iter().rev()),
            other => flat.push(other),
        }
    }
    let mut elements = Vec::with_capacity(flat.len() * 16);
    for value in &flat {
        let mut element = [0u8; 16];
        match value {
            Value::Nil => element[0] = 0,
            Value::Int(i) => {
                element[0] = 2;
                element[8..].copy_from_slice(&i.to_le_bytes());
            }
            Value::SimpleString(s) => {
                element[0] = 1;
                let (ptr, len) = guest.put(&mut *caller, s.as_bytes()).await?;
                element[8..].copy_from_slice(&pair(ptr, len));
            }
            Value::Okay => {
                element[0] = 1;
                let (ptr, len) = guest.put(&mut *caller, b"OK").await?;
                element[8..].copy_from_slice(&pair(ptr, len));
            }
            other => {
                let bytes = match other {
                    Value::BulkString(bytes) => bytes.clone(),
                    other => format!("{other:?}").into_bytes(),
                };
                element[0] = 3;
                let (ptr, len) = guest.put(&mut *caller, &bytes).await?;
                element[8..].copy_from_slice(&pair(ptr, len));
            }
        }
        elements.extend_from_slice(&element);
    }
    let ptr = guest.alloc(&mut *caller, elements.len(), 8).await?;
    guest.write(&mut *caller, ptr, &elements)?;
    Ok((ptr, flat.len() as i32))
}

/// Links a function whose reply is an integer: `expected<s64, error>`, the payload at 8.
macro_rules! integer {
    ($linker:expr, $name:literal, $command:literal, ($($p:ident),*), |$guest:ident, $caller:ident, $cmd:ident| $args:block) => {
        $linker.func_wrap_async(
            "outbound-redis",
            $name,
            |mut $caller: Caller<'_, Spin1State>, (ap, al, $($p,)* ret): (i32, i32, $(integer!(@i32 $p),)* i32)| {
                Box::new(async move {
                    let $guest = guest(&mut $caller)?;
                    let address = $guest.string(&$caller, ap, al)?;
                    let mut $cmd = redis::cmd($command);
                    $args
                    let reply: Option<i64> = run(&mut $caller, &address, $name, $cmd).await;
                    match reply {
                        Some(n) => expected_at(&mut $caller, &$guest, ret, 8, Ok(&n.to_le_bytes())),
                        None => expected_at(&mut $caller, &$guest, ret, 8, Err(ERROR)),
                    }
                })
            },
        )?;
    };
    (@i32 $p:ident) => { i32 };
}

pub(super) fn add_to_linker(linker: &mut Linker<Spin1State>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        "outbound-redis",
        "publish",
        |mut caller: Caller<'_, Spin1State>,
         (ap, al, cp, cl, pp, pl, ret): (i32, i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let guest = guest(&mut caller)?;
                let address = guest.string(&caller, ap, al)?;
                let mut command = redis::cmd("PUBLISH");
                command
                    .arg(guest.string(&caller, cp, cl)?)
                    .arg(guest.bytes(&caller, pp, pl)?);
                let done: Option<i64> = run(&mut caller, &address, "publish", command).await;
                expected_at(
                    &mut caller,
                    &guest,
                    ret,
                    1,
                    done.map(|_| &[][..]).ok_or(ERROR),
                )
            })
        },
    )?;
    linker.func_wrap_async(
        "outbound-redis",
        "set",
        |mut caller: Caller<'_, Spin1State>,
         (ap, al, kp, kl, vp, vl, ret): (i32, i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let guest = guest(&mut caller)?;
                let address = guest.string(&caller, ap, al)?;
                let mut command = redis::cmd("SET");
                command
                    .arg(guest.string(&caller, kp, kl)?)
                    .arg(guest.bytes(&caller, vp, vl)?);
                let done: Option<()> = run(&mut caller, &address, "set", command).await;
                expected_at(
                    &mut caller,
                    &guest,
                    ret,
                    1,
                    done.map(|()| &[][..]).ok_or(ERROR),
                )
            })
        },
    )?;
    linker.func_wrap_async(
        "outbound-redis",
        "get",
        |mut caller: Caller<'_, Spin1State>, (ap, al, kp, kl, ret): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let guest = guest(&mut caller)?;
                let address = guest.string(&caller, ap, al)?;
                let mut command = redis::cmd("GET");
                command.arg(guest.string(&caller, kp, kl)?);
                // A missing key reads as an empty payload, as Spin 1 answered it.
                let value: Option<Option<Vec<u8>>> =
                    run(&mut caller, &address, "get", command).await;
                match value {
                    Some(value) => {
                        let (ptr, len) = guest.put(&mut caller, &value.unwrap_or_default()).await?;
                        expected_at(&mut caller, &guest, ret, 4, Ok(&pair(ptr, len)))
                    }
                    None => expected_at(&mut caller, &guest, ret, 4, Err(ERROR)),
                }
            })
        },
    )?;
    linker.func_wrap_async(
        "outbound-redis",
        "smembers",
        |mut caller: Caller<'_, Spin1State>, (ap, al, kp, kl, ret): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let guest = guest(&mut caller)?;
                let address = guest.string(&caller, ap, al)?;
                let mut command = redis::cmd("SMEMBERS");
                command.arg(guest.string(&caller, kp, kl)?);
                let members: Option<Vec<String>> =
                    run(&mut caller, &address, "smembers", command).await;
                match members {
                    Some(members) => {
                        let (ptr, len) = guest.put_strings(&mut caller, &members).await?;
                        expected_at(&mut caller, &guest, ret, 4, Ok(&pair(ptr, len)))
                    }
                    None => expected_at(&mut caller, &guest, ret, 4, Err(ERROR)),
                }
            })
        },
    )?;
    linker.func_wrap_async(
        "outbound-redis",
        "execute",
        |mut caller: Caller<'_, Spin1State>,
         (ap, al, cp, cl, argp, argl, ret): (i32, i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let guest = guest(&mut caller)?;
                let address = guest.string(&caller, ap, al)?;
                let mut command = redis::cmd(&guest.string(&caller, cp, cl)?);
                let raw = guest.bytes(&caller, argp, argl.saturating_mul(16))?;
                for element in raw.chunks_exact(16) {
                    let word = |i: usize| {
                        i32::from_le_bytes([
                            element[i],
                            element[i + 1],
                            element[i + 2],
                            element[i + 3],
                        ])
                    };
                    match element[0] {
                        0 => {
                            let mut n = [0u8; 8];
                            n.copy_from_slice(&element[8..16]);
                            command.arg(i64::from_le_bytes(n));
                        }
                        _ => {
                            command.arg(guest.bytes(&caller, word(8), word(12))?);
                        }
                    }
                }
                let reply: Option<Value> = run(&mut caller, &address, "execute", command).await;
                match reply {
                    Some(value) => {
                        let (ptr, len) = results(&mut caller, &guest, value).await?;
                        expected_at(&mut caller, &guest, ret, 4, Ok(&pair(ptr, len)))
                    }
                    None => expected_at(&mut caller, &guest, ret, 4, Err(ERROR)),
                }
            })
        },
    )?;
    integer!(
        linker,
        "incr",
        "INCR",
        (kp, kl),
        |guest, caller, command| {
            command.arg(guest.string(&caller, kp, kl)?);
        }
    );
    integer!(linker, "del", "DEL", (kp, kl), |guest, caller, command| {
        command.arg(guest.strings(&caller, kp, kl)?);
    });
    integer!(
        linker,
        "sadd",
        "SADD",
        (kp, kl, vp, vl),
        |guest, caller, command| {
            command
                .arg(guest.string(&caller, kp, kl)?)
                .arg(guest.strings(&caller, vp, vl)?);
        }
    );
    integer!(
        linker,
        "srem",
        "SREM",
        (kp, kl, vp, vl),
        |guest, caller, command| {
            command
                .arg(guest.string(&caller, kp, kl)?)
                .arg(guest.strings(&caller, vp, vl)?);
        }
    );
    Ok(())
}
