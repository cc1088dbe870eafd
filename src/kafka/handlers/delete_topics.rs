//! DeleteTopics: by name (v1-5) or by name or topic id (v6, KIP-516). The
//! active controller writes a `RemoveTopic` record per topic; every broker's
//! replica manager removes the partitions' files when its image drops them.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::create_topics::{failure, outcome, LOCAL_IMAGE_WAIT};
use super::{str_bytes, RequestShape};
use crate::controller::topic_control::TopicRef;
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for DeleteTopicsRequest {
    /// v1-5 `topic_names: [string]`; v6 `topics: [name, topic_id]`.
    fn shape(version: i16) -> Shape {
        if version >= 6 {
            &[Field::Array(&[Field::Str, Field::Fixed(16)])]
        } else {
            // Plain strings: no tagged fields per element in v4-5.
            &[Field::ValueArray(&[Field::Str])]
        }
    }
}

/// What one entry of the request asks to delete, or why it cannot say.
fn topic_ref(name: Option<&TopicName>, id: Uuid) -> Result<TopicRef, (i16, String)> {
    match (name, id.is_nil()) {
        (Some(_), false) => Err((
            ResponseError::InvalidRequest.code(),
            "You may not specify both topic name and topic id.".into(),
        )),
        (Some(n), true) => Ok(TopicRef::Name(n.0.to_string())),
        (None, false) => Ok(TopicRef::Id(id)),
        (None, true) => Err((
            ResponseError::InvalidRequest.code(),
            "Neither topic name nor id were specified.".into(),
        )),
    }
}

pub async fn handle(
    ctx: &BrokerContext,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let asked: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let refs: Vec<Result<TopicRef, (i16, String)>> = asked
        .iter()
        .map(|(name, id)| topic_ref(name.as_ref(), *id))
        .collect();
    let valid: Vec<TopicRef> = refs.iter().filter_map(|r| r.clone().ok()).collect();
    let reply = if valid.is_empty() {
        None
    } else {
        Some(ctx.controller.delete_topics(valid).await)
    };
    if let Some(Ok(r)) = &reply {
        ctx.controller
            .wait_for_offset(r.metadata_offset, LOCAL_IMAGE_WAIT)
            .await;
    }
    let mut deleted = match &reply {
        Some(Ok(r)) => r.topics.clone().into_iter(),
        _ => Vec::new().into_iter(),
    };
    let responses = asked
        .into_iter()
        .zip(refs)
        .map(|((name, id), r)| {
            let (name, id, code, message) = match (r, &reply) {
                (Err((code, message)), _) => (name, id, code, Some(message)),
                (Ok(_), Some(Err(e))) => {
                    let (code, message) = failure(e);
                    (name, id, code, message)
                }
                (Ok(_), _) => match deleted.next() {
                    Some(d) => {
                        let (code, message) = outcome(&d.result);
                        let name = d.name.map(|n| TopicName(str_bytes(&n)));
                        (name, d.topic_id, code, message)
                    }
                    None => (
                        name,
                        id,
                        ResponseError::UnknownServerError.code(),
                        Some("the controller answered for fewer topics than asked".into()),
                    ),
                },
            };
            DeletableTopicResult::default()
                .with_name(name)
                .with_topic_id(id)
                .with_error_code(code)
                .with_error_message(message.as_deref().map(str_bytes))
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

#[cfg(test)]
pub fn request(version: i16) -> DeleteTopicsRequest {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    if version >= 6 {
        DeleteTopicsRequest::default().with_topics(vec![DeleteTopicState::default()
            .with_name(None)
            .with_topic_id(Uuid::from_u128(1))])
    } else {
        DeleteTopicsRequest::default().with_topic_names(vec![TopicName(str_bytes("t"))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_named_by_name_or_id_not_both() {
        let name = TopicName(str_bytes("t"));
        let id = Uuid::from_u128(9);
        assert_eq!(
            topic_ref(Some(&name), Uuid::nil()),
            Ok(TopicRef::Name("t".into()))
        );
        assert_eq!(topic_ref(None, id), Ok(TopicRef::Id(id)));
        assert!(topic_ref(Some(&name), id).is_err());
        assert!(topic_ref(None, Uuid::nil()).is_err());
    }
}
