//! The Spin interfaces wafer does not provide — llm, mqtt and mysql. They link, so a component that
//! imports them (every spin-sdk Python component does) runs, and a call answers with the interface's own
//! error value and a line in the execution's log.

use super::bindings::fermyon::spin::{llm, mqtt, mysql, rdbms_types};
use crate::host::ComponentState;
use wasmtime::component::Resource;

/// A connection that is never opened: `open` always fails.
pub struct Unopened;

const WHY: &str = "is not provided by wafer";

impl ComponentState {
    fn absent(&self, interface: &str) -> String {
        self.refused(interface, "call", format!("fermyon:spin/{interface} {WHY}"))
    }
}

impl llm::Host for ComponentState {
    async fn infer(
        &mut self,
        _model: String,
        _prompt: String,
        _params: Option<llm::InferencingParams>,
    ) -> wasmtime::Result<Result<llm::InferencingResult, llm::Error>> {
        Ok(Err(llm::Error::RuntimeError(self.absent("llm"))))
    }

    async fn generate_embeddings(
        &mut self,
        _model: String,
        _text: Vec<String>,
    ) -> wasmtime::Result<Result<llm::EmbeddingsResult, llm::Error>> {
        Ok(Err(llm::Error::RuntimeError(self.absent("llm"))))
    }
}

impl mqtt::Host for ComponentState {}

impl mqtt::HostConnection for ComponentState {
    async fn open(
        &mut self,
        _address: String,
        _username: String,
        _password: String,
        _keep_alive_interval_in_secs: u64,
    ) -> wasmtime::Result<Result<Resource<Unopened>, mqtt::Error>> {
        Ok(Err(mqtt::Error::ConnectionFailed(self.absent("mqtt"))))
    }

    async fn publish(
        &mut self,
        _connection: Resource<Unopened>,
        _topic: String,
        _payload: Vec<u8>,
        _qos: mqtt::Qos,
    ) -> wasmtime::Result<Result<(), mqtt::Error>> {
        Ok(Err(mqtt::Error::Other(self.absent("mqtt"))))
    }

    async fn drop(&mut self, connection: Resource<Unopened>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

impl mysql::Host for ComponentState {}

impl mysql::HostConnection for ComponentState {
    async fn open(
        &mut self,
        _address: String,
    ) -> wasmtime::Result<Result<Resource<Unopened>, rdbms_types::Error>> {
        Ok(Err(rdbms_types::Error::ConnectionFailed(
            self.absent("mysql"),
        )))
    }

    async fn query(
        &mut self,
        _connection: Resource<Unopened>,
        _statement: String,
        _params: Vec<rdbms_types::ParameterValue>,
    ) -> wasmtime::Result<Result<rdbms_types::RowSet, rdbms_types::Error>> {
        Ok(Err(rdbms_types::Error::Other(self.absent("mysql"))))
    }

    async fn execute(
        &mut self,
        _connection: Resource<Unopened>,
        _statement: String,
        _params: Vec<rdbms_types::ParameterValue>,
    ) -> wasmtime::Result<Result<(), rdbms_types::Error>> {
        Ok(Err(rdbms_types::Error::Other(self.absent("mysql"))))
    }

    async fn drop(&mut self, connection: Resource<Unopened>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}
