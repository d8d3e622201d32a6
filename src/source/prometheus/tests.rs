//! Tests of `prometheus`.

use super::*;

#[test]
fn a_missing_client_certificate_is_named_however_the_refusal_arrives() {
    // The three ways a TLS server's refusal of a missing client
    // certificate reaches rollbackd, depending on timing.
    for message in [
        "received fatal alert: CertificateRequired",
        "connection closed before message completed",
        "client error (Canceled): operation was canceled: connection was not ready",
    ] {
        assert!(
            tls_hint(message, true).contains("wants a client certificate"),
            "{message}"
        );
    }
    // With a certificate presented, a closed connection is not blamed
    // on it.
    assert_eq!(tls_hint("connection was not ready", false), "");
    assert!(tls_hint("received fatal alert: BadCertificate", false)
        .contains("refused rollbackd's client certificate"));
}

fn decode_all(data: ApiData) -> Result<Vec<Sample>, SourceError> {
    decode(data, usize::MAX)
}
use crate::source::config::BasicAuth;

fn data(kind: &str, result: &str) -> ApiData {
    serde_json::from_str(&format!(r#"{{"resultType":"{kind}","result":{result}}}"#)).unwrap()
}

#[test]
fn a_combined_query_parses_and_labels_each_part() {
    let queries = [
        Query::new("sum(rate(x[5m])) # a trailing comment"),
        Query::new("scalar(up)"),
        Query::new("x > bool 1"),
    ];
    assert!(!queries[0].scalar && queries[1].scalar && !queries[2].scalar);
    let text = combine(&queries);
    let ast = promql_parser::parser::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        ast.value_type(),
        promql_parser::parser::value::ValueType::Vector
    );
    for i in 0..3 {
        assert!(
            text.contains(&format!("\"{INDEX_LABEL}\", \"{i}\"")),
            "{text}"
        );
    }
    assert!(text.contains("vector(\nscalar(up)\n)"), "{text}");
}

#[test]
fn a_combined_answer_is_split_back_per_query() {
    let sample = |index: Option<&str>, v: f64| Sample {
        labels: index
            .map(|i| {
                Labels::from([
                    (INDEX_LABEL.to_string(), i.to_string()),
                    ("code".into(), format!("50{v}")),
                ])
            })
            .unwrap_or_default(),
        value: v,
    };
    let answers = split(
        vec![
            sample(Some("2"), 1.0),
            sample(Some("0"), 2.0),
            sample(Some("2"), 3.0),
        ],
        3,
    )
    .unwrap();
    assert_eq!(answers[0].len(), 1);
    assert!(
        answers[1].is_empty(),
        "a query without series has an empty answer"
    );
    assert_eq!(
        answers[2].iter().map(|s| s.value).collect::<Vec<_>>(),
        [1.0, 3.0]
    );
    assert_eq!(
        answers[2][0].labels,
        Labels::from([("code".to_string(), "501".to_string())]),
        "the index label is removed"
    );
    // Two series with the same labels in one answer: taken at face
    // value once, now the answer is refused.
    let twice = split(vec![sample(Some("1"), 1.0), sample(Some("1"), 1.0)], 2);
    assert!(
        matches!(&twice, Err(SourceError::Decode(m)) if m.contains("same labels")),
        "{twice:?}"
    );
    for bad in [
        sample(None, 1.0),
        sample(Some("3"), 1.0),
        sample(Some("x"), 1.0),
    ] {
        assert!(matches!(split(vec![bad], 3), Err(SourceError::Decode(_))));
    }
}

#[test]
fn a_query_asked_alone_is_a_chunk_of_its_own_and_order_is_kept() {
    let config = PrometheusConfig {
        max_queries_per_request: 2,
        ..PrometheusConfig::default()
    };
    let prometheus = Prometheus::new(&config).unwrap();
    prometheus.solo_set().insert("b".into());
    let queries = ["a", "b", "c", "d", "e"].map(Query::new);
    let chunks: Vec<Vec<&str>> = prometheus
        .chunks(&queries)
        .iter()
        .map(|c| c.iter().map(|q| q.expr).collect())
        .collect();
    assert_eq!(chunks, [vec!["a"], vec!["b"], vec!["c", "d"], vec!["e"]]);
}

#[test]
fn only_answers_every_query_would_share_are_not_asked_again() {
    let connect = SourceError::Connect {
        url: "u".into(),
        message: "refused".into(),
    };
    let busy = SourceError::Status {
        status: 503,
        body: String::new(),
    };
    let bad = SourceError::Api {
        error_type: "execution".into(),
        message: "many-to-many".into(),
    };
    let slow = SourceError::Timeout {
        after: Duration::from_secs(1),
    };
    assert!(!worth_asking_one_by_one(&connect) && !worth_asking_one_by_one(&busy));
    assert!(worth_asking_one_by_one(&bad) && worth_asking_one_by_one(&slow));
}

#[test]
fn decodes_vectors_with_nan_and_inf() {
    let samples = decode_all(data(
        "vector",
        r#"[{"metric":{"__name__":"x","a":"1"},"value":[1.0,"NaN"]},
                {"metric":{"a":"2"},"value":[1.0,"+Inf"]},
                {"metric":{"a":"3"},"value":[1.0,"0.25"]}]"#,
    ))
    .unwrap();
    assert!(samples[0].value.is_nan());
    assert!(!samples[0].labels.contains_key("__name__"));
    assert_eq!(samples[1].value, f64::INFINITY);
    assert_eq!(samples[2].value, 0.25);
}

#[test]
fn decodes_scalars_and_refuses_strings_and_matrices() {
    let s = decode_all(data("scalar", r#"[1.0,"3"]"#)).unwrap();
    assert_eq!(s[0].value, 3.0);
    assert!(matches!(
        decode_all(data("string", r#"[1.0,"x"]"#)),
        Err(SourceError::Unsupported(_))
    ));
    assert!(matches!(
        decode_all(data("matrix", "[]")),
        Err(SourceError::Unsupported(_))
    ));
}

#[test]
fn native_histograms_are_unsupported_not_a_crash() {
    let e = decode_all(data(
        "vector",
        r#"[{"metric":{},"histogram":[1.0,{"count":"1"}]}]"#,
    ))
    .unwrap_err();
    assert_eq!(e.kind(), "unsupported_result");
}

/// Answers one HTTP request with `response`, on a thread of its own.
fn answer_once(response: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = conn.write_all(response.as_bytes());
    });
    url
}

async fn ask(config: PrometheusConfig) -> SourceError {
    let prometheus = Prometheus::new(&config).unwrap();
    prometheus.query("up", SystemTime::now()).await.unwrap_err()
}

#[test]
fn an_unreadable_bearer_token_file_names_the_key_to_fix() {
    let config = PrometheusConfig {
        bearer_token_file: Some("/nonexistent/rollbackd/token".into()),
        ..PrometheusConfig::default()
    };
    let text = Prometheus::new(&config).unwrap_err().to_string();
    assert!(text.contains("prometheus.bearer_token_file"), "{text}");
    assert!(text.contains("/nonexistent/rollbackd/token"), "{text}");
    assert!(!text.contains("decode"), "{text}");
}

#[tokio::test]
async fn a_401_names_the_credentials_key_to_fix() {
    let url = answer_once(
        "HTTP/1.1 401 Unauthorized\r\ncontent-length: 12\r\nconnection: close\r\n\r\nUnauthorized",
    );
    let e = ask(PrometheusConfig {
        url,
        bearer_token: Some(crate::secret::Secret::new("wrong")),
        ..PrometheusConfig::default()
    })
    .await;
    let text = e.to_string();
    assert!(
        matches!(e, SourceError::Unauthorized { status: 401, .. }),
        "{text}"
    );
    assert!(text.contains("fix prometheus.bearer_token"), "{text}");
    assert!(!text.contains("decode"), "{text}");
    assert!(!worth_asking_one_by_one(&e));
}

#[tokio::test]
async fn a_403_without_credentials_says_which_keys_to_set() {
    let url =
        answer_once("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let text = ask(PrometheusConfig {
        url,
        ..PrometheusConfig::default()
    })
    .await
    .to_string();
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(
        text.contains("set prometheus.bearer_token, bearer_token_file or basic_auth"),
        "{text}"
    );
}

#[tokio::test]
async fn a_login_page_instead_of_json_points_at_the_credentials() {
    let url = answer_once(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 26\r\nconnection: close\r\n\r\n<html><form>login</form>\n\n",
        );
    let e = ask(PrometheusConfig {
        url,
        basic_auth: Some(BasicAuth {
            username: "u".into(),
            password: crate::secret::Secret::new("p"),
        }),
        ..PrometheusConfig::default()
    })
    .await;
    let text = e.to_string();
    assert!(matches!(e, SourceError::WebPage { .. }), "{text}");
    assert!(text.contains("fix prometheus.basic_auth"), "{text}");
}
