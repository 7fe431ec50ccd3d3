//! Image tarballs as users upload them, read by [`wafer_formats::oci_image`] (which says how): an
//! image that cannot be read is an invalid image.

use crate::error::ContainerError;
pub(crate) use wafer_formats::oci_image::this_architecture;
pub use wafer_formats::oci_image::{digest_of, Unpacked};

/// Reads an image tarball (OCI layout or docker-archive).
pub fn read(tarball: &[u8]) -> Result<Unpacked, ContainerError> {
    wafer_formats::oci_image::read(tarball).map_err(ContainerError::InvalidImage)
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_cannot_be_read_is_an_invalid_image() {
        let error = super::read(b"plain text").unwrap_err();
        assert!(
            matches!(error, crate::ContainerError::InvalidImage(_)),
            "{error:?}"
        );
        assert!(error.to_string().starts_with("invalid image"), "{error}");
    }
}
