//! `multipart/form-data` bodies as deploys send them: parts read one by one, each within a cap, the
//! whole body within another, and a function's deploy form (`module` or `image`, `files`, `config`,
//! `variables`) checked part by part.

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use wafer_api::{ConfigUpdate, FunctionConfig, Kind};

/// Why a form was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// The body is not a form, or not the form expected (400).
    Malformed(String),
    /// A part, or the whole body, is over its cap (413).
    TooLarge {
        /// What was too large.
        what: String,
        /// Its cap, in bytes.
        cap: usize,
    },
    /// A JSON part is not what it should be (400, `invalid_config`).
    InvalidConfig(String),
}

/// A form being read.
pub struct Form<'a> {
    inner: multer::Multipart<'a>,
    total_cap: usize,
}

/// One part of a form, not read yet.
pub struct Part<'a> {
    field: multer::Field<'a>,
    name: String,
    total_cap: usize,
}

impl<'a> Form<'a> {
    /// The form in `body`, whose `Content-Type` is `content_type`, refused past `total_cap` bytes.
    pub fn new<S, O, E>(body: S, content_type: &str, total_cap: usize) -> Result<Self, FormError>
    where
        S: Stream<Item = Result<O, E>> + Send + 'a,
        O: Into<Bytes> + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'a,
    {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| FormError::Malformed(format!("not a multipart/form-data body: {e}")))?;
        let limits = multer::SizeLimit::new().whole_stream(total_cap as u64);
        let constraints = multer::Constraints::new().size_limit(limits);
        Ok(Self {
            inner: multer::Multipart::with_constraints(body, boundary, constraints),
            total_cap,
        })
    }

    /// The next part, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Part<'a>>, FormError> {
        let total_cap = self.total_cap;
        let field = self
            .inner
            .next_field()
            .await
            .map_err(|e| error(e, total_cap))?;
        Ok(field.map(|field| Part {
            name: field.name().unwrap_or_default().to_string(),
            field,
            total_cap,
        }))
    }
}

impl Part<'_> {
    /// The part's name (empty when it has none).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The part's bytes, refused past `cap`; `what` names it in the error.
    pub async fn read(mut self, cap: usize, what: &str) -> Result<Bytes, FormError> {
        let mut bytes = BytesMut::new();
        while let Some(chunk) = self
            .field
            .chunk()
            .await
            .map_err(|e| error(e, self.total_cap))?
        {
            if bytes.len() + chunk.len() > cap {
                return Err(FormError::TooLarge {
                    what: what.to_string(),
                    cap,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes.freeze())
    }
}

fn error(e: multer::Error, total_cap: usize) -> FormError {
    match e {
        multer::Error::StreamSizeExceeded { .. } => FormError::TooLarge {
            what: "the body".into(),
            cap: total_cap,
        },
        other => FormError::Malformed(format!("malformed multipart body: {other}")),
    }
}

/// The caps of a deploy form's parts.
#[derive(Debug, Clone, Copy)]
pub struct DeployCaps {
    /// The largest `module` (and `files`) part.
    pub module: usize,
    /// The largest `image` part.
    pub image: usize,
    /// The largest `config` or `variables` part.
    pub config: usize,
}

/// A function's deploy form, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Deploy {
    /// The module, or the image tarball (empty for a container config naming an `oci://` image).
    pub body: Bytes,
    /// The files bundle.
    pub files: Option<Bytes>,
    /// The configuration; a container's when the form sent an `image`.
    pub config: FunctionConfig,
    /// Variables and secrets.
    pub variables: ConfigUpdate,
}

/// Reads a deploy form: one `module` or `image`, and at most one `files`, `config` and `variables`.
/// An `image` part makes the function a container unless its config says otherwise.
pub async fn deploy(mut form: Form<'_>, caps: DeployCaps) -> Result<Deploy, FormError> {
    let (mut module, mut image, mut files) = (None, None, None);
    let (mut config, mut variables) = (None, None);
    while let Some(part) = form.next().await? {
        match part.name() {
            "module" if module.is_none() && image.is_none() => {
                module = Some(part.read(caps.module, "the module").await?)
            }
            "image" if module.is_none() && image.is_none() => {
                image = Some(part.read(caps.image, "the image").await?)
            }
            "files" if files.is_none() => {
                files = Some(part.read(caps.module, "the files bundle").await?)
            }
            "config" if config.is_none() => {
                let bytes = part.read(caps.config, "the config part").await?;
                config = Some(json::<FunctionConfig>(&bytes, "config")?);
            }
            "variables" if variables.is_none() => {
                let bytes = part.read(caps.config, "the variables part").await?;
                variables = Some(json::<ConfigUpdate>(&bytes, "variables")?);
            }
            other => {
                return Err(FormError::Malformed(format!(
                    "unexpected or repeated multipart part {other:?}: send one `module` or `image` \
                     and at most one `files`, one `config` and one `variables`"
                )))
            }
        }
    }
    let mut config = config.unwrap_or_default();
    let body =
        match (module, image) {
            (Some(module), None) => module,
            (None, Some(image)) => {
                config.kind.get_or_insert(Kind::Container);
                image
            }
            (None, None) if config.kind == Some(Kind::Container) && config.image.is_some() => {
                Bytes::new()
            }
            _ => return Err(FormError::Malformed(
                "the multipart body has no `module` part (nor an `image` part, nor a container \
                 config naming an oci:// image)"
                    .into(),
            )),
        };
    Ok(Deploy {
        body,
        files,
        config,
        variables: variables.unwrap_or_default(),
    })
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], part: &str) -> Result<T, FormError> {
    crate::json::object(bytes)
        .map_err(|e| FormError::InvalidConfig(format!("the {part} part is not valid: {e}")))
}

/// Runs a future that never waits to its end: a form read from bytes already in memory.
pub fn ready<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(value) => Some(value),
        std::task::Poll::Pending => None,
    }
}

/// The form in `body`, all of it at hand, as [`deploy`] reads it (the fuzz target's entry point).
pub fn deploy_from_bytes(
    body: Bytes,
    content_type: &str,
    caps: DeployCaps,
) -> Result<Deploy, FormError> {
    // All of it is in memory already: the parts' caps are what bound the work.
    let total = body.len();
    let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(body)]);
    let form = Form::new(stream, content_type, total)?;
    ready(deploy(form, caps)).unwrap_or_else(|| {
        Err(FormError::Malformed(
            "the form waited on a body that was all at hand".into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE: &str = "multipart/form-data; boundary=XyZ";
    const CAPS: DeployCaps = DeployCaps {
        module: 16,
        image: 32,
        config: 64,
    };

    fn form(parts: &[(&str, &str)]) -> Bytes {
        let mut body = String::new();
        for (name, value) in parts {
            body.push_str(&format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str("--XyZ--\r\n");
        Bytes::from(body)
    }

    #[test]
    fn a_deploy_form_is_read_part_by_part() {
        let read = deploy_from_bytes(
            form(&[
                ("module", "\0asm"),
                ("config", r#"{"memory_mb": 64}"#),
                ("variables", r#"{"variables": {"A": "b"}}"#),
            ]),
            TYPE,
            CAPS,
        )
        .unwrap();
        assert_eq!(read.body, Bytes::from_static(b"\0asm"));
        assert_eq!(read.config.memory_mb, Some(64));
        assert_eq!(read.variables.variables["A"], "b");
        let image = deploy_from_bytes(form(&[("image", "tar")]), TYPE, CAPS).unwrap();
        assert_eq!(image.config.kind, Some(Kind::Container));
    }

    #[test]
    fn bad_forms_are_refused_with_the_reason() {
        let refused = |parts: &[(&str, &str)]| deploy_from_bytes(form(parts), TYPE, CAPS);
        assert!(matches!(refused(&[]), Err(FormError::Malformed(m)) if m.contains("no `module`")));
        assert!(matches!(
            refused(&[("module", "a"), ("module", "b")]),
            Err(FormError::Malformed(m)) if m.contains("repeated")
        ));
        assert!(matches!(
            refused(&[("module", "a"), ("image", "b")]),
            Err(FormError::Malformed(_))
        ));
        assert_eq!(
            refused(&[("module", &"x".repeat(17))]),
            Err(FormError::TooLarge {
                what: "the module".into(),
                cap: 16
            })
        );
        assert!(matches!(
            refused(&[("module", "a"), ("config", "{")]),
            Err(FormError::InvalidConfig(_))
        ));
        for (body, content_type) in [
            (Bytes::from_static(b"no boundary here"), TYPE),
            (form(&[("module", "a")]), "text/plain"),
            (form(&[("module", "a")]), "multipart/form-data"),
            (
                Bytes::from_static(
                    b"--XyZ\r\nContent-Disposition: form-data; name=\"module\"\r\n\r\nabc",
                ),
                TYPE,
            ),
        ] {
            assert!(
                deploy_from_bytes(body.clone(), content_type, CAPS).is_err(),
                "{body:?} as {content_type}"
            );
        }
    }
}
