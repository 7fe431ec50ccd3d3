//! An image tarball as a deploy uploads it (an OCI layout or a docker-archive): any bytes read as a
//! manifest with every blob it names, each matching its digest, or as an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|tarball: &[u8]| {
    if let Ok(image) = wafer_formats::oci_image::read(tarball) {
        for (digest, blob) in &image.blobs {
            assert_eq!(&wafer_formats::oci_image::digest_of(blob), digest);
        }
    }
});
