//! What the managed backends (Redis and PostgreSQL) have in common: a
//! headless Service that gives the one pod a stable DNS name, and a
//! volumeClaimTemplate for their data.

use crds::ChatCluster;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Service, ServicePort, ServiceSpec,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::meta::{Component, Names, child_meta};

/// The name of the data volume (and of its claim template).
pub const DATA_VOLUME: &str = "data";

/// A headless Service named `name` for a backend's pods, on one named TCP port.
pub fn headless_service(
    cc: &ChatCluster,
    name: String,
    component: Component,
    port_name: &str,
    port: i32,
) -> Service {
    let names = Names::of(cc);
    Service {
        metadata: child_meta(cc, name, component),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(names.selector_labels(component)),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port,
                target_port: Some(IntOrString::String(port_name.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A volumeClaimTemplate named `data`, labelled with the component's labels so the
/// finalizer can find the claims the StatefulSet controller creates from it.
pub fn claim_template(
    names: &Names,
    component: Component,
    size: &str,
    storage_class: Option<&str>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(names.labels(component)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage_class.map(String::from),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(size.into()))].into()),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}
