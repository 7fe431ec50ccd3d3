//! A binary compiled by one of the engine's wasmtime engines, before it is pre-instantiated.

use object::elf::FileHeader64;
use object::read::elf::{FileHeader, SectionHeader};
use object::{Endianness, ReadRef};
use std::path::Path;
use wasmtime::component::Component;
use wasmtime::Module;

/// A binary compiled, before it is pre-instantiated.
pub(super) enum Code {
    Module(Module),
    Component(Component),
}

impl Code {
    /// The compiled image's bytes besides its machine code: its memories' initial contents, mostly.
    /// [`artifact_image_data`] reads the same from an artifact without loading it.
    pub(super) fn image_data(&self) -> usize {
        let text = match self {
            Self::Module(module) => module.text().len(),
            Self::Component(component) => component.text().len(),
        };
        self.image_len().saturating_sub(text)
    }

    /// The compiled image's size in bytes: its machine code and the rest (what its artifact would hold).
    pub(super) fn image_len(&self) -> usize {
        let image = match self {
            Self::Module(module) => module.image_range(),
            Self::Component(component) => component.image_range(),
        };
        image.end.addr() - image.start.addr()
    }

    /// Which of the two forms of compiled code this is.
    pub(super) fn form(&self) -> wasmtime::Precompiled {
        match self {
            Self::Module(_) => wasmtime::Precompiled::Module,
            Self::Component(_) => wasmtime::Precompiled::Component,
        }
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

    /// [`Code::deserialize`] from the artifact file at `path`, memory-mapped rather than copied.
    ///
    /// # Safety
    ///
    /// As for [`Code::deserialize`], and the file must not change while the code is in use.
    pub(super) unsafe fn deserialize_file(
        form: wasmtime::Precompiled,
        engine: &wasmtime::Engine,
        path: &Path,
    ) -> wasmtime::Result<Self> {
        // SAFETY: as this function requires.
        unsafe {
            match form {
                wasmtime::Precompiled::Module => {
                    Module::deserialize_file(engine, path).map(Self::Module)
                }
                wasmtime::Precompiled::Component => {
                    Component::deserialize_file(engine, path).map(Self::Component)
                }
            }
        }
    }
}

/// What [`Code::image_data`] of an artifact will be once loaded: the artifact is the image, an ELF file
/// whose `.text` section is the machine code. Reads the section table alone; `None` when the file is not
/// ELF or has no code section, which loading then refuses or places as a small image.
pub(super) fn artifact_image_data(artifact: &[u8]) -> Option<usize> {
    text_size(artifact).map(|text| artifact.len().saturating_sub(text))
}

/// [`artifact_image_data`] of the artifact file at `path`.
pub(super) fn artifact_file_image_data(path: &Path) -> Option<usize> {
    let file = std::fs::File::open(path).ok()?;
    let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    let cache = object::ReadCache::new(file);
    text_size(&cache).map(|text| len.saturating_sub(text))
}

/// The size of the artifact's `.text` section, from its file header and section table alone (unlike
/// `object::File::parse`, it leaves the symbol table unread). wasmtime writes 64-bit ELF on 64-bit
/// hosts; any other form gives `None`, and the artifact is placed as a small image.
fn text_size<'a, R: ReadRef<'a>>(artifact: R) -> Option<usize> {
    let header = FileHeader64::<Endianness>::parse(artifact).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, artifact).ok()?;
    let (_, text) = sections.section_by_name(endian, b".text")?;
    usize::try_from(text.sh_size(endian)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_tells_its_image_data_before_it_is_loaded() {
        let engine = wasmtime::Engine::default();
        let data = "x".repeat(300_000);
        let module =
            format!(r#"(module (memory 8) (data (i32.const 16) "{data}") (func (export "f")))"#);
        let component = format!("(component (core module {})", &module["(module".len()..]);
        let module = Module::new(&engine, wat::parse_str(&module).unwrap()).map(Code::Module);
        let component =
            Component::new(&engine, wat::parse_str(&component).unwrap()).map(Code::Component);
        for code in [module.unwrap(), component.unwrap()] {
            let artifact = code.serialize().unwrap();
            assert!(code.image_data() >= data.len());
            assert_eq!(artifact_image_data(&artifact), Some(code.image_data()));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.cwasm");
            std::fs::write(&path, &artifact).unwrap();
            assert_eq!(artifact_file_image_data(&path), Some(code.image_data()));
        }
        assert_eq!(artifact_image_data(b"\0asm\x01\0\0\0"), None);
        assert_eq!(artifact_file_image_data(Path::new("/nonexistent")), None);
    }
}
