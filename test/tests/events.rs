//! GetContainerEvents with real pods and containers (root): two subscribers each see every
//! lifecycle step, in order, with the pod's and containers' statuses attached; a subscriber that
//! does not read does not hold the runtime up.

mod support;

use std::time::Duration;

use berth_proto::cri::{
    ContainerEventResponse, ContainerEventType as E, ContainerState, CreateContainerRequest, GetEventsRequest,
    PodSandboxState, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};
use berth_proto::tonic::Streaming;
use berth_test::{Daemon, registry, require_root};

const CGROUP_PARENT: &str = "/berth-test-secctx-events";

async fn next(s: &mut Streaming<ContainerEventResponse>) -> ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(60), s.message())
        .await
        .expect("an event within a minute")
        .unwrap()
        .expect("the stream stays open")
}

/// The next `n` events as (id, type).
async fn take(s: &mut Streaming<ContainerEventResponse>, n: usize) -> Vec<(String, E)> {
    let mut v = vec![];
    for _ in 0..n {
        let e = next(s).await;
        v.push((e.container_id.clone(), E::try_from(e.container_event_type).unwrap()));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_in_order() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    let image = registry::image("busybox:latest");
    d.pull(&image).await;
    let mut rt = d.runtime().await.unwrap();
    let mut a = rt.get_container_events(GetEventsRequest {}).await.unwrap().into_inner();
    let mut b = rt.get_container_events(GetEventsRequest {}).await.unwrap().into_inner();
    // A third subscriber that never reads.
    let _idle = rt.get_container_events(GetEventsRequest {}).await.unwrap().into_inner();

    let logs = d.dir.path().join("logs");
    let pod_cfg = support::pod_config("events", CGROUP_PARENT, &logs);
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let e = next(&mut a).await;
    assert_eq!(
        (e.container_id.as_str(), e.container_event_type),
        (pod.as_str(), E::ContainerCreatedEvent as i32)
    );
    let ps = e.pod_sandbox_status.unwrap();
    assert_eq!(
        (ps.id.as_str(), ps.state),
        (pod.as_str(), PodSandboxState::SandboxReady as i32)
    );
    assert_eq!(
        ps.metadata.unwrap().uid,
        "uid-events",
        "kubelet finds the pod by its UID"
    );
    assert_eq!(next(&mut a).await.container_event_type, E::ContainerStartedEvent as i32);

    let create = |name: &str, script: &str| CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(support::container(name, &image, script)),
        sandbox_config: Some(pod_cfg.clone()),
    };
    let sleeper = rt
        .create_container(create("sleeper", "sleep 1000"))
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let e = next(&mut a).await;
    assert_eq!(
        (e.container_id.as_str(), e.container_event_type),
        (sleeper.as_str(), E::ContainerCreatedEvent as i32)
    );
    let st = e.containers_statuses.iter().find(|s| s.id == sleeper).unwrap();
    assert_eq!(st.state, ContainerState::ContainerCreated as i32);
    rt.start_container(StartContainerRequest {
        container_id: sleeper.clone(),
    })
    .await
    .unwrap();
    let e = next(&mut a).await;
    assert_eq!(
        (e.container_id.as_str(), e.container_event_type),
        (sleeper.as_str(), E::ContainerStartedEvent as i32)
    );
    let st = e.containers_statuses.iter().find(|s| s.id == sleeper).unwrap();
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    assert_eq!(e.pod_sandbox_status.unwrap().id, pod);

    // A process that exits at once: STARTED still comes before STOPPED.
    let quick = rt
        .create_container(create("quick", "true"))
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: quick.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        take(&mut a, 3).await,
        [
            (quick.clone(), E::ContainerCreatedEvent),
            (quick.clone(), E::ContainerStartedEvent),
            (quick.clone(), E::ContainerStoppedEvent)
        ]
    );

    rt.stop_container(StopContainerRequest {
        container_id: sleeper.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let e = next(&mut a).await;
    assert_eq!(
        (e.container_id.as_str(), e.container_event_type),
        (sleeper.as_str(), E::ContainerStoppedEvent as i32)
    );
    let st = e.containers_statuses.iter().find(|s| s.id == sleeper).unwrap();
    assert_eq!((st.state, st.exit_code), (ContainerState::ContainerExited as i32, 137));
    for id in [&sleeper, &quick] {
        rt.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    }
    assert_eq!(
        take(&mut a, 2).await,
        [
            (sleeper.clone(), E::ContainerDeletedEvent),
            (quick.clone(), E::ContainerDeletedEvent)
        ]
    );
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let stopped = next(&mut a).await;
    assert_eq!(
        (stopped.container_id.as_str(), stopped.container_event_type),
        (pod.as_str(), E::ContainerStoppedEvent as i32)
    );
    let deleted = next(&mut a).await;
    assert_eq!(
        (deleted.container_id.as_str(), deleted.container_event_type),
        (pod.as_str(), E::ContainerDeletedEvent as i32)
    );
    assert_eq!(
        deleted.pod_sandbox_status.unwrap().id,
        pod,
        "the removed pod's last status is attached"
    );

    // The second subscriber saw the same sequence.
    let seen_b = take(&mut b, 12).await;
    let want = [
        (pod.clone(), E::ContainerCreatedEvent),
        (pod.clone(), E::ContainerStartedEvent),
        (sleeper.clone(), E::ContainerCreatedEvent),
        (sleeper.clone(), E::ContainerStartedEvent),
        (quick.clone(), E::ContainerCreatedEvent),
        (quick.clone(), E::ContainerStartedEvent),
        (quick.clone(), E::ContainerStoppedEvent),
        (sleeper.clone(), E::ContainerStoppedEvent),
        (sleeper.clone(), E::ContainerDeletedEvent),
        (quick.clone(), E::ContainerDeletedEvent),
        (pod.clone(), E::ContainerStoppedEvent),
        (pod.clone(), E::ContainerDeletedEvent),
    ];
    assert_eq!(seen_b, want);
    assert!(berth_test::mounts_under(d.dir.path()).is_empty());
    berth_test::wait_no_processes(&d.config.state).await;
    support::remove_cgroup(CGROUP_PARENT);
    // Open subscriptions do not hold berthd's shutdown up: their streams end.
    let mut d = d;
    tokio::time::timeout(Duration::from_secs(20), d.stop())
        .await
        .expect("berthd stops with subscribers connected")
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(20), a.message())
            .await
            .expect("the stream ends")
            .map(|m| m.is_none())
            .unwrap_or(true)
    );
}
