package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/klog/v2"
)

// startEtcd starts a single-member etcd with its data under dir, listening
// on free ports of 127.0.0.1. Free ports are found by binding and releasing
// them, so another process may take one in between: retry a few times.
func startEtcd(dir string) (*embed.Etcd, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 1; attempt <= etcdStartAttempts; attempt++ {
		e, err := startEtcdOnce(dir)
		if err == nil {
			return e, nil
		}
		lastErr = err
		klog.InfoS("signalman-apiserver: etcd failed to start, retrying", "attempt", attempt, "err", err)
	}
	return nil, fmt.Errorf("start etcd: %w", lastErr)
}

func startEtcdOnce(dir string) (*embed.Etcd, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))}

	cfg := embed.NewConfig()
	cfg.Name = "signalman"
	cfg.Dir = dir
	cfg.UnsafeNoFsync = true // test data only; never survives a machine crash
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// One member, no peers: a short election timeout only makes it elect
	// itself sooner at start-up.
	cfg.TickMs = 10
	cfg.ElectionMs = 100
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{embed.StdErrLogOutput}
	cfg.EnableGRPCGateway = false

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		if err == nil {
			err = errors.New("etcd stopped")
		}
		return nil, err
	case <-time.After(etcdReadyTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("etcd not ready after %s", etcdReadyTimeout)
	}
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
