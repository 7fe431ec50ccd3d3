//! Outbound Redis (`fermyon:spin/redis@2.0.0`). An address is a `redis://` URL whose host and port must
//! be in the function's `allowed_outbound_hosts` (for example `redis://cache.internal:6379`); the
//! connection goes to exactly the address that was checked, counts against the function's outbound
//! connections, and each command is bounded by its outbound timeout.

use super::bindings::fermyon::spin::redis as api;
use crate::host::outbound::OutboundPolicy;
use crate::host::ComponentState;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, Value};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::Resource;

/// An open connection, holding one of the function's outbound slots.
pub struct Connection {
    pub(crate) redis: MultiplexedConnection,
    pub(crate) timeout: Duration,
    _slot: OwnedSemaphorePermit,
}

type Answer<T> = wasmtime::Result<Result<T, api::Error>>;

/// Connects to `address` once `policy` lets the function reach it.
pub(crate) async fn connect(
    policy: OutboundPolicy,
    address: &str,
) -> Result<Connection, api::Error> {
    let info = address
        .into_connection_info()
        .map_err(|_| api::Error::InvalidAddress)?;
    let (host, port) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        _ => {
            return Err(api::Error::Other(
                "only redis://host:port addresses are supported (not TLS or unix sockets)".into(),
            ))
        }
    };
    let addresses = policy
        .resolve("redis", &host, port)
        .await
        .map_err(api::Error::Other)?;
    let target = addresses.first().ok_or(api::Error::InvalidAddress)?;
    let slot = policy
        .acquire()
        .await
        .ok_or(api::Error::TooManyConnections)?;
    let info = info.set_addr(ConnectionAddr::Tcp(target.ip().to_string(), port));
    let client = redis::Client::open(info).map_err(|e| api::Error::Other(e.to_string()))?;
    let timeout = policy.timeout();
    let redis = tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| api::Error::Other(format!("connecting to {host}:{port} timed out")))?
        .map_err(|e| api::Error::Other(e.to_string()))?;
    Ok(Connection {
        redis,
        timeout,
        _slot: slot,
    })
}

impl ComponentState {
    /// Runs `command` on an open connection.
    async fn redis_run<T: redis::FromRedisValue>(
        &mut self,
        connection: &Resource<Connection>,
        what: &str,
        command: redis::Cmd,
    ) -> Answer<T> {
        let open = self.table.get(connection)?;
        let (mut redis, timeout) = (open.redis.clone(), open.timeout);
        let result = match tokio::time::timeout(timeout, command.query_async::<T>(&mut redis)).await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.kind() == redis::ErrorKind::UnexpectedReturnType => {
                Err(api::Error::TypeError)
            }
            Ok(Err(e)) => Err(api::Error::Other(e.to_string())),
            Err(_) => Err(api::Error::Other(format!(
                "the command took longer than {} ms",
                timeout.as_millis()
            ))),
        };
        Ok(result.map_err(|e| self.refused("redis", what, e)))
    }
}

/// A reply as Spin's `execute` lists it: arrays are flattened into the list.
fn results(value: Value, into: &mut Vec<api::RedisResult>) {
    match value {
        Value::Nil => into.push(api::RedisResult::Nil),
        Value::Int(i) => into.push(api::RedisResult::Int64(i)),
        Value::BulkString(bytes) => into.push(api::RedisResult::Binary(bytes)),
        Value::SimpleString(s) => into.push(api::RedisResult::Status(s)),
        Value::Okay => into.push(api::RedisResult::Status("OK".into())),
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                results(item, into);
            }
        }
        Value::Double(d) => into.push(api::RedisResult::Binary(d.to_string().into_bytes())),
        Value::Boolean(b) => into.push(api::RedisResult::Int64(i64::from(b))),
        other => into.push(api::RedisResult::Binary(format!("{other:?}").into_bytes())),
    }
}

impl api::Host for ComponentState {}

impl api::HostConnection for ComponentState {
    async fn open(&mut self, address: String) -> Answer<Resource<Connection>> {
        match connect(self.hooks.policy.clone(), &address).await {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(e) => Ok(Err(self.refused("redis", "open", e))),
        }
    }

    async fn publish(
        &mut self,
        c: Resource<Connection>,
        channel: String,
        payload: Vec<u8>,
    ) -> Answer<()> {
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(payload);
        self.redis_run::<i64>(&c, "publish", command)
            .await
            .map(|r| r.map(drop))
    }

    async fn get(&mut self, c: Resource<Connection>, key: String) -> Answer<Option<Vec<u8>>> {
        let mut command = redis::cmd("GET");
        command.arg(key);
        self.redis_run(&c, "get", command).await
    }

    async fn set(&mut self, c: Resource<Connection>, key: String, value: Vec<u8>) -> Answer<()> {
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value);
        self.redis_run(&c, "set", command).await
    }

    async fn incr(&mut self, c: Resource<Connection>, key: String) -> Answer<i64> {
        let mut command = redis::cmd("INCR");
        command.arg(key);
        self.redis_run(&c, "incr", command).await
    }

    async fn del(&mut self, c: Resource<Connection>, keys: Vec<String>) -> Answer<u32> {
        let mut command = redis::cmd("DEL");
        command.arg(keys);
        self.redis_run(&c, "del", command).await
    }

    async fn sadd(
        &mut self,
        c: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> Answer<u32> {
        let mut command = redis::cmd("SADD");
        command.arg(key).arg(values);
        self.redis_run(&c, "sadd", command).await
    }

    async fn smembers(&mut self, c: Resource<Connection>, key: String) -> Answer<Vec<String>> {
        let mut command = redis::cmd("SMEMBERS");
        command.arg(key);
        self.redis_run(&c, "smembers", command).await
    }

    async fn srem(
        &mut self,
        c: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> Answer<u32> {
        let mut command = redis::cmd("SREM");
        command.arg(key).arg(values);
        self.redis_run(&c, "srem", command).await
    }

    async fn execute(
        &mut self,
        c: Resource<Connection>,
        name: String,
        arguments: Vec<api::RedisParameter>,
    ) -> Answer<Vec<api::RedisResult>> {
        let mut command = redis::cmd(&name);
        for argument in arguments {
            match argument {
                api::RedisParameter::Int64(i) => command.arg(i),
                api::RedisParameter::Binary(bytes) => command.arg(bytes),
            };
        }
        let reply = self.redis_run::<Value>(&c, "execute", command).await?;
        Ok(reply.map(|value| {
            let mut list = Vec::new();
            results(value, &mut list);
            list
        }))
    }

    async fn drop(&mut self, c: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}
