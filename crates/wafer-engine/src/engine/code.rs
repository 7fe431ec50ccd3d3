//! A binary compiled by one of the engine's wasmtime engines, before it is pre-instantiated.

use wasmtime::component::Component;
use wasmtime::Module;

/// A binary compiled, before it is pre-instantiated.
pub(super) enum Code {
    Module(Module),
    Component(Component),
}

impl Code {
    /// The compiled image's bytes besides its machine code: its memories' initial contents, mostly.
    pub(super) fn image_data(&self) -> usize {
        let (image, text) = match self {
            Self::Module(module) => (module.image_range(), module.text().len()),
            Self::Component(component) => (component.image_range(), component.text().len()),
        };
        (image.end.addr() - image.start.addr()).saturating_sub(text)
    }

    pub(super) fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Self::Module(module) => module.serialize(),
            Self::Component(component) => component.serialize(),
        }
    }

    /// # Safety
    ///
    /// `artifact` must be compiled code serialised by an engine configured as `engine` is.
    pub(super) unsafe fn deserialize(
        form: wasmtime::Precompiled,
        engine: &wasmtime::Engine,
        artifact: &[u8],
    ) -> wasmtime::Result<Self> {
        // SAFETY: as this function requires.
        unsafe {
            match form {
                wasmtime::Precompiled::Module => {
                    Module::deserialize(engine, artifact).map(Self::Module)
                }
                wasmtime::Precompiled::Component => {
                    Component::deserialize(engine, artifact).map(Self::Component)
                }
            }
        }
    }
}
