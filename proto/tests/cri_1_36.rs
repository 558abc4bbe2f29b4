//! Bytes written by hand with the field numbers and wire types Kubernetes 1.33-1.36 gave each CRI
//! addition, decoded by berth's bindings: a renumbered or retyped field fails here.

use berth_proto::cri::*;
use prost::Message;

/// A tiny protobuf writer: just enough to spell messages field by field.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn varint(mut self, mut v: u64) -> Self {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }
    fn tag(self, field: u64, wire: u64) -> Self {
        self.varint(field << 3 | wire)
    }
    fn uint(self, field: u64, v: u64) -> Self {
        self.tag(field, 0).varint(v)
    }
    fn double(mut self, field: u64, v: f64) -> Self {
        self = self.tag(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, field: u64, b: &[u8]) -> Self {
        self = self.tag(field, 2).varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn msg(self, field: u64, m: W) -> Self {
        self.bytes(field, &m.0)
    }
}

fn psi_stats() -> W {
    // PsiStats { Full = 1: PsiData { Total = 1, Avg10 = 2 }, Some = 2: PsiData { Avg60 = 3, Avg300 = 4 } }
    W::default()
        .msg(1, W::default().uint(1, 1234).double(2, 1.5))
        .msg(2, W::default().double(3, 0.25).double(4, 0.125))
}

fn check_psi(p: &Option<PsiStats>) {
    let p = p.as_ref().expect("psi");
    let full = p.full.unwrap();
    let some = p.some.unwrap();
    assert_eq!((full.total, full.avg10), (1234, 1.5));
    assert_eq!((some.avg60, some.avg300), (0.25, 0.125));
}

#[test]
fn stop_signals() {
    let c = ContainerConfig::decode(&*W::default().uint(18, Signal::Sigusr1 as u64).0).unwrap();
    assert_eq!(c.stop_signal(), Signal::Sigusr1);
    let s = ContainerStatus::decode(&*W::default().uint(19, 65).0).unwrap();
    assert_eq!(s.stop_signal(), Signal::Sigrtmax);
    assert_eq!(Signal::Sigrtminplus1 as i32, 36);
    assert_eq!(Signal::Sigrtmaxminus14 as i32, 51);
}

#[test]
fn image_sub_path_and_image_ref() {
    let m = Mount::decode(&*W::default().bytes(1, b"/data").bytes(10, b"sub/dir").0).unwrap();
    assert_eq!(
        (m.container_path.as_str(), m.image_sub_path.as_str()),
        ("/data", "sub/dir")
    );
    let i = ImageSpec::decode(&*W::default().bytes(1, b"busybox").bytes(20, b"sha256:abc").0).unwrap();
    assert_eq!(i.image_ref, "sha256:abc");
}

#[test]
fn pressure_and_io_stats() {
    let cpu = CpuUsage::decode(&*W::default().uint(1, 7).msg(4, psi_stats()).0).unwrap();
    check_psi(&cpu.psi);
    let mem = MemoryUsage::decode(&*W::default().msg(8, psi_stats()).0).unwrap();
    check_psi(&mem.psi);
    let io = W::default().uint(1, 9).msg(2, psi_stats());
    let c = ContainerStats::decode(&*W::default().msg(6, io).0).unwrap();
    assert_eq!(c.io.as_ref().unwrap().timestamp, 9);
    check_psi(&c.io.unwrap().psi);
    let io = W::default().uint(1, 9).msg(2, psi_stats());
    let p = LinuxPodSandboxStats::decode(&*W::default().msg(6, io).0).unwrap();
    check_psi(&p.io.unwrap().psi);
}

#[test]
fn runtime_features() {
    let f = RuntimeFeatures::decode(&*W::default().uint(1, 1).uint(2, 1).0).unwrap();
    assert!(f.supplemental_groups_policy && f.user_namespaces_host_network);
}

#[test]
fn update_pod_sandbox_resources() {
    let res = |mem: u64| W::default().uint(1, 100_000).uint(2, 50_000).uint(4, mem);
    let r = UpdatePodSandboxResourcesRequest::decode(
        &*W::default()
            .bytes(1, b"pod1")
            .msg(2, res(1 << 20))
            .msg(3, res(64 << 20))
            .0,
    )
    .unwrap();
    assert_eq!(r.pod_sandbox_id, "pod1");
    assert_eq!(r.overhead.unwrap().memory_limit_in_bytes, 1 << 20);
    let sum = r.resources.unwrap();
    assert_eq!(
        (sum.cpu_period, sum.cpu_quota, sum.memory_limit_in_bytes),
        (100_000, 50_000, 64 << 20)
    );
}

#[test]
fn list_streaming() {
    let filter = W::default().bytes(1, b"abc");
    assert_eq!(
        StreamContainersRequest::decode(&*W::default().msg(1, filter).0)
            .unwrap()
            .filter
            .unwrap()
            .id,
        "abc"
    );
    let item = W::default().bytes(1, b"c1");
    let r = StreamContainersResponse::decode(&*W::default().msg(1, item).0).unwrap();
    assert_eq!(r.containers[0].id, "c1");
    let item = W::default().bytes(1, b"p1");
    assert_eq!(
        StreamPodSandboxesResponse::decode(&*W::default().msg(1, item).0)
            .unwrap()
            .pod_sandboxes[0]
            .id,
        "p1"
    );
    let item = W::default().bytes(1, b"sha256:1");
    assert_eq!(
        StreamImagesResponse::decode(&*W::default().msg(1, item).0)
            .unwrap()
            .images[0]
            .id,
        "sha256:1"
    );
    let attrs = W::default().msg(1, W::default().bytes(1, b"c2"));
    let r = StreamContainerStatsResponse::decode(&*W::default().msg(1, attrs).0).unwrap();
    assert_eq!(r.container_stats[0].attributes.as_ref().unwrap().id, "c2");
    let attrs = W::default().msg(1, W::default().bytes(1, b"p2"));
    let r = StreamPodSandboxStatsResponse::decode(&*W::default().msg(1, attrs).0).unwrap();
    assert_eq!(r.pod_sandbox_stats[0].attributes.as_ref().unwrap().id, "p2");
    let m = W::default().bytes(1, b"p3");
    let r = StreamPodSandboxMetricsResponse::decode(&*W::default().msg(1, m).0).unwrap();
    assert_eq!(r.pod_sandbox_metrics[0].pod_sandbox_id, "p3");
}
