// Command signalman-apiserver runs an embedded etcd and a real kube-apiserver
// (built from the official Kubernetes Go modules) in one process, for the
// signalman test suites.
//
//	signalman-apiserver --data-dir DIR --kubeconfig PATH [--token TOKEN] [--port N]
//
// It generates what it needs under DIR (serving certificates, a
// service-account key, a token file), waits until /readyz answers 200, writes
// the kubeconfig atomically and then prints exactly one line
// "ready https://127.0.0.1:PORT" to stdout. SIGTERM or SIGINT shut it down
// cleanly with exit code 0.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sys/unix"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/keyutil"
	basecompatibility "k8s.io/component-base/compatibility"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

const (
	defaultToken      = "signalman-admin-token"
	adminUser         = "admin"
	adminGroup        = "system:masters"
	serviceCIDR       = "10.96.0.0/12"
	saIssuer          = "https://kubernetes.default.svc.cluster.local"
	readyTimeout      = 3 * time.Minute
	etcdReadyTimeout  = time.Minute
	etcdStartAttempts = 5
)

// errOut is where our own diagnostics go: the original stderr, even when the
// server's log (fd 2) has been redirected to a file.
var errOut io.Writer = os.Stderr

type config struct {
	dataDir    string
	kubeconfig string
	token      string
	port       int
	logFile    string
	verbosity  int
	watchStdin bool
	// Passed to kube-apiserver's --runtime-config: APIs turned on or off, as an older or
	// differently configured cluster serves them.
	runtimeConfig string
	// kube-apiserver's --disable-admission-plugins.
	disabledAdmission string
	// ServiceAccount admission on: pods get their token volume (for a node's pods).
	saAdmission bool
}

func main() {
	// Start-up is allocation-heavy (API schemas, OpenAPI): collecting less
	// often cuts its CPU time by about a fifth for ~100 MB more memory.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	os.Exit(run())
}

// Shutdown state, shared with the signal handler and klog.OsExit.
var (
	ctx, cancelCtx = context.WithCancel(context.Background())
	shuttingDown   atomic.Bool
	failing        atomic.Bool // serve failed; main is on its way out
	sigs           = make(chan os.Signal, 2)
	etcdServer     atomic.Pointer[embed.Etcd]
	etcdClosed     sync.Once
)

func shutdown() {
	shuttingDown.Store(true)
	cancelCtx()
}

// closeEtcd closes the embedded etcd once, giving up after a few seconds.
func closeEtcd() {
	etcdClosed.Do(func() {
		e := etcdServer.Load()
		if e == nil {
			return
		}
		done := make(chan struct{})
		go func() { e.Close(); close(done) }()
		select {
		case <-done:
			klog.InfoS("signalman-apiserver: etcd closed")
		case <-time.After(10 * time.Second):
			klog.InfoS("signalman-apiserver: etcd did not close in 10s")
		}
	})
}

func run() int {
	start := time.Now()
	// SIGTERM/SIGINT cancel ctx; the apiserver then shuts down gracefully and
	// etcd is closed. A second signal exits at once.
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer cancelCtx()
	cfg, err := parseArgs(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(errOut, "signalman-apiserver: %v\n", err)
		return 2
	}

	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		fmt.Fprintf(errOut, "signalman-apiserver: %v\n", err)
		return 1
	}
	if cfg.dataDir, err = filepath.Abs(cfg.dataDir); err != nil {
		fmt.Fprintf(errOut, "signalman-apiserver: %v\n", err)
		return 1
	}
	// One server per data dir: fail fast instead of fighting over etcd's
	// files (the lock is held until the process exits).
	lock, err := os.OpenFile(filepath.Join(cfg.dataDir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintf(errOut, "signalman-apiserver: %v\n", err)
		return 1
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		fmt.Fprintf(errOut, "signalman-apiserver: data dir %s is in use by another signalman-apiserver: %v\n", cfg.dataDir, err)
		return 1
	}
	if cfg.logFile == "" {
		cfg.logFile = filepath.Join(cfg.dataDir, "apiserver.log")
	}
	if cfg.logFile != "-" {
		if err := redirectStderr(cfg.logFile); err != nil {
			fmt.Fprintf(errOut, "signalman-apiserver: redirect log: %v\n", err)
			return 1
		}
	}

	go func() {
		s := <-sigs
		klog.InfoS("signalman-apiserver: shutting down", "signal", s.String())
		shutdown()
		<-sigs
		fmt.Fprintln(errOut, "signalman-apiserver: second signal, exiting immediately")
		os.Exit(1)
	}()
	if cfg.watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			klog.InfoS("signalman-apiserver: stdin closed, shutting down")
			shutdown()
		}()
	}
	// The apiserver calls klog.Fatal when, say, a post-start hook fails,
	// which it also does when a signal cancels it before it is ready.
	klog.OsExit = func(code int) {
		if failing.Load() {
			select {} // main reports the failure and exits
		}
		if !shuttingDown.Load() {
			fmt.Fprintf(errOut, "signalman-apiserver: the apiserver failed (exit %d)\n", code)
			if cfg.logFile != "-" {
				fmt.Fprintf(errOut, "signalman-apiserver: server log: %s\n%s", cfg.logFile, tail(cfg.logFile, 40))
			}
			closeEtcd()
			os.Exit(code)
		}
		closeEtcd()
		os.Exit(0)
	}

	if err := serve(cfg, start); err != nil {
		if shuttingDown.Load() && !failing.Load() {
			// Told to stop while starting: not a failure.
			klog.InfoS("signalman-apiserver: stopped while starting", "err", err)
			return 0
		}
		fmt.Fprintf(errOut, "signalman-apiserver: %v\n", err)
		if cfg.logFile != "-" {
			fmt.Fprintf(errOut, "signalman-apiserver: server log: %s\n%s", cfg.logFile, tail(cfg.logFile, 40))
		}
		return 1
	}
	return 0
}

func parseArgs(args []string) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("signalman-apiserver", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.StringVar(&cfg.dataDir, "data-dir", "", "directory for etcd data, certificates, keys and the server log (required)")
	fs.StringVar(&cfg.kubeconfig, "kubeconfig", "", "where to write the admin kubeconfig once the server is ready (required)")
	fs.StringVar(&cfg.token, "token", defaultToken, "bearer token of the admin user (group system:masters)")
	fs.IntVar(&cfg.port, "port", 0, "secure port on 127.0.0.1; 0 picks a free one")
	fs.StringVar(&cfg.logFile, "log-file", "", "server log (apiserver and etcd); default DATA_DIR/apiserver.log, '-' for stderr")
	fs.IntVar(&cfg.verbosity, "v", 0, "klog verbosity of the apiserver")
	fs.BoolVar(&cfg.saAdmission, "service-account-admission", false, "run the ServiceAccount admission plugin (pods get their token volume; for a node, whose controller-manager creates the default ServiceAccounts)")
	fs.BoolVar(&cfg.watchStdin, "exit-on-stdin-eof", false, "shut down when stdin reaches EOF (the parent closed the pipe or died)")
	fs.StringVar(&cfg.runtimeConfig, "runtime-config", "", "kube-apiserver --runtime-config (e.g. admissionregistration.k8s.io/v1/mutatingadmissionpolicies=false)")
	// ServiceAccount is off by default: without a controller-manager no namespace has a
	// default ServiceAccount to admit pods with.
	fs.StringVar(&cfg.disabledAdmission, "disable-admission-plugins", "ServiceAccount", "kube-apiserver --disable-admission-plugins (an API turned off needs its plugin off too, e.g. ServiceAccount,MutatingAdmissionPolicy)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	switch {
	case cfg.dataDir == "":
		return nil, errors.New("--data-dir is required")
	case cfg.kubeconfig == "":
		return nil, errors.New("--kubeconfig is required")
	case cfg.token == "" || strings.ContainsAny(cfg.token, ",\"\n\r"):
		return nil, errors.New("--token must be non-empty and contain no comma, quote or newline")
	case cfg.port < 0 || cfg.port > 65535:
		return nil, fmt.Errorf("--port %d out of range", cfg.port)
	}
	return cfg, nil
}

// redirectStderr points fd 2 at path, so that everything the apiserver, etcd
// and the Go runtime write to stderr lands in the log file. errOut keeps the
// original stderr for our own messages.
func redirectStderr(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	orig, err := unix.Dup(int(os.Stderr.Fd()))
	if err != nil {
		return err
	}
	unix.CloseOnExec(orig)
	errOut = os.NewFile(uintptr(orig), "/dev/stderr")
	return unix.Dup2(int(f.Fd()), int(os.Stderr.Fd()))
}

func serve(cfg *config, start time.Time) error {
	// A kubeconfig left by an earlier run must not look like this one's.
	if err := os.Remove(cfg.kubeconfig); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale kubeconfig: %w", err)
	}

	certDir := filepath.Join(cfg.dataDir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	saKeyFile := filepath.Join(cfg.dataDir, "sa.key")
	if err := ensureRSAKey(saKeyFile); err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}
	tokenFile := filepath.Join(cfg.dataDir, "tokens.csv")
	tokenLine := fmt.Sprintf("%s,%s,%s,\"%s\"\n", cfg.token, adminUser, adminUser, adminGroup)
	if err := os.WriteFile(tokenFile, []byte(tokenLine), 0o600); err != nil {
		return err
	}

	// The secure port: bind it here so that --port 0 has no race.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.port)))
	if err != nil {
		return fmt.Errorf("listen on 127.0.0.1:%d: %w", cfg.port, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	keepListener := false
	defer func() {
		if !keepListener {
			ln.Close()
		}
	}()

	etcd, err := startEtcd(filepath.Join(cfg.dataDir, "etcd"))
	if err != nil {
		return err
	}
	etcdServer.Store(etcd)
	defer closeEtcd()
	etcdURL := etcd.Clients[0].Addr().String()
	klog.InfoS("signalman-apiserver: etcd ready", "endpoint", etcdURL, "elapsed", time.Since(start))

	// The production path: options → flags → Complete → Validate → Run.
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	flags := []string{
		"--v=" + strconv.Itoa(cfg.verbosity),
		"--advertise-address=127.0.0.1",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir,
		"--etcd-servers=http://" + etcdURL,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--service-account-issuer=" + saIssuer,
		"--service-account-key-file=" + saKeyFile,
		"--service-account-signing-key-file=" + saKeyFile,
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		// Nothing but the apiserver runs: no Endpoints for "kubernetes" (the
		// loopback address is not a valid endpoint anyway).
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}
	if cfg.runtimeConfig != "" {
		flags = append(flags, "--runtime-config="+cfg.runtimeConfig)
	}
	var disabled []string
	for _, plugin := range strings.Split(cfg.disabledAdmission, ",") {
		// With a node (--service-account-admission) pods get their ServiceAccount token.
		if plugin != "" && !(cfg.saAdmission && plugin == "ServiceAccount") {
			disabled = append(disabled, plugin)
		}
	}
	if len(disabled) > 0 {
		flags = append(flags, "--disable-admission-plugins="+strings.Join(disabled, ","))
	}
	if err := fs.Parse(flags); err != nil {
		return fmt.Errorf("apiserver flags: %w", err)
	}
	s.SecureServing.Listener = ln
	s.SecureServing.BindPort = port

	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	// The apiserver's loopback clients should not log warnings to us.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	if err := logsapi.ValidateAndApply(s.Logs, featureGate); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return fmt.Errorf("complete apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return fmt.Errorf("validate apiserver options: %w", utilerrors.NewAggregate(errs))
	}

	// Complete generated the serving certificate (leaf followed by its CA).
	caPEM, err := caFromChain(filepath.Join(certDir, "apiserver.crt"))
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(cfg.dataDir, "ca.crt"), caPEM, 0o644); err != nil {
		return err
	}

	runErr := make(chan error, 1)
	keepListener = true // the apiserver owns it now
	go func() { runErr <- app.Run(ctx, completed) }()

	// Past this point a failure exits the process with the apiserver still
	// running: keep klog.Fatal calls caused by that from getting in first.
	fail := func(err error) error {
		failing.Store(true)
		return err
	}
	server := "https://127.0.0.1:" + strconv.Itoa(port)
	if err := waitReady(ctx, server, caPEM, cfg.token, runErr); err != nil {
		return fail(err)
	}
	if ctx.Err() == nil {
		if err := writeKubeconfig(cfg.kubeconfig, server, caPEM, cfg.token); err != nil {
			return fail(fmt.Errorf("write kubeconfig: %w", err))
		}
		klog.InfoS("signalman-apiserver: ready", "server", server, "elapsed", time.Since(start))
		fmt.Fprintf(os.Stdout, "ready %s\n", server)
		_ = os.Stdout.Sync()
	}

	// Run until a signal cancels ctx (app.Run then returns nil after a
	// graceful shutdown) or the server fails.
	if err := <-runErr; err != nil {
		return fail(fmt.Errorf("apiserver: %w", err))
	}
	if ctx.Err() == nil {
		return fail(errors.New("apiserver stopped unexpectedly"))
	}
	klog.InfoS("signalman-apiserver: apiserver stopped")
	return nil
}

// ensureRSAKey writes a new 2048-bit RSA key to path unless one is there.
func ensureRSAKey(path string) error {
	if _, err := keyutil.PrivateKeyFromFile(path); err == nil {
		return nil
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: keyutil.RSAPrivateKeyBlockType, Bytes: der}), 0o600)
}

// caFromChain returns the PEM of the CA certificate in the bundle at path
// (the self-signed serving certificate file holds the leaf, then the CA).
func caFromChain(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ca []byte
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if c.IsCA {
			ca = pem.EncodeToMemory(block)
		}
	}
	if ca == nil {
		return nil, fmt.Errorf("%s: no CA certificate in the serving certificate bundle", path)
	}
	return ca, nil
}

func waitReady(ctx context.Context, server string, caPEM []byte, token string, runErr <-chan error) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("cannot parse the CA certificate")
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: false},
	}
	deadline := time.Now().Add(readyTimeout)
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		select {
		case err := <-runErr:
			if err == nil {
				err = errors.New("stopped")
			}
			return fmt.Errorf("apiserver exited before ready: %w", err)
		case <-ctx.Done():
			return nil // a signal: the caller shuts down quietly
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("apiserver not ready after %s; last /readyz answer: %s", readyTimeout, last)
		}
	}
}

func writeKubeconfig(path, server string, caPEM []byte, token string) error {
	const name = "signalman"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	kc.AuthInfos[adminUser] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: adminUser, Namespace: "default"}
	kc.CurrentContext = name
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return writeFileAtomic(path, data, 0o600)
}

// writeFileAtomic writes data to a temporary file in path's directory and
// renames it over path, so readers never see a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.SplitAfter(string(data), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}
