//! axum's `Path` and `Query` extractors, refusing what they cannot read with the API's JSON error
//! (axum's own refusals are plain text, which the API's description does not promise).

use crate::error::Error;
use axum::extract::FromRequestParts;
use http::request::Parts;
use serde::de::DeserializeOwned;

/// The request's path parameters, as [`axum::extract::Path`] reads them.
pub struct Path<T>(pub T);

/// The request's query string, as [`axum::extract::Query`] reads it.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|path| Path(path.0))
            .map_err(|e| Error::InvalidRequest(e.body_text()))
    }
}

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|query| Query(query.0))
            .map_err(|e| Error::InvalidRequest(e.body_text()))
    }
}
