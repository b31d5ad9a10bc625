//! rumqttc options from `[mqtt]`: the same checks as config validation,
//! then credentials and TLS.

use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS};

use super::{BrokerUrl, LinkError, LinkSetup, Secrets, Topics};
use crate::problem::{Origin, Problems};

/// Checks `setup.config` with the config validator and builds rumqttc
/// options: client id, keep-alive, packet size, Last Will on `topics.status`,
/// credentials, TLS.
pub fn options(setup: &LinkSetup, topics: &Topics) -> Result<MqttOptions, LinkError> {
    let c = &setup.config;
    let origin = Origin::new("mqtt", &setup.base_dir);
    let mut problems = Problems::new(&origin);
    c.validate(&mut problems);
    if let Some(first) = problems.into_vec().into_iter().next() {
        return Err(LinkError::Config {
            field: first.field,
            message: first.message,
        });
    }
    let url = BrokerUrl::parse(&c.broker).map_err(|e| LinkError::Config {
        field: "mqtt.broker".into(),
        message: e.to_string(),
    })?;
    let secrets = c
        .secrets(&origin)
        .map_err(|(field, message)| LinkError::Config {
            field: field.into(),
            message,
        })?;
    let client_id = c
        .client_id
        .clone()
        .unwrap_or_else(|| format!("edgeinfer-{}", setup.device_id));
    let mut o = MqttOptions::new(client_id, url.host.clone(), url.port);
    o.set_keep_alive(Duration::from_secs_f64(c.keep_alive_s));
    o.set_max_packet_size(c.max_packet_bytes, c.max_packet_bytes);
    o.set_clean_session(true);
    o.set_inflight(c.inflight.saturating_add(8));
    o.set_last_will(LastWill::new(
        &topics.status,
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let (Some(user), Some(password)) = (&c.username, &secrets.password) {
        o.set_credentials(user.clone(), password.clone());
    }
    if url.tls {
        tls(secrets, &mut o);
    }
    Ok(o)
}

#[cfg(feature = "tls")]
fn tls(secrets: Secrets, o: &mut MqttOptions) {
    // rustls needs its crypto provider chosen once per process: ring,
    // which cross-compiles to ARM without the aws-lc toolchain.
    let _ = rustls::crypto::ring::default_provider().install_default();
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca: secrets.ca.unwrap_or_default(),
            alpn: None,
            client_auth: secrets.client_auth,
        },
    ));
}

#[cfg(not(feature = "tls"))]
fn tls(_: Secrets, _: &mut MqttOptions) {
    // Validation refuses mqtts:// in builds without TLS.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_below_a_second_is_a_config_error_not_a_panic() {
        let setup = LinkSetup {
            config: super::super::MqttConfig {
                keep_alive_s: 0.5,
                ..Default::default()
            },
            device_id: "d".into(),
            base_dir: ".".into(),
            outbox: Default::default(),
            subscriptions: vec![],
            control: vec![],
            info: String::new(),
        };
        let err = options(&setup, &Topics::new("p")).unwrap_err();
        assert!(err.to_string().starts_with("mqtt.keep_alive_s"), "{err}");
    }
}
