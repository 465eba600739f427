package spiffetest

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// WorkloadAPI is a fake SPIFFE Workload API for one workload: it serves the
// workload's X.509-SVID, the bundles of its CA and of any federated CAs, and
// signs JWT-SVIDs with the workload's CA. Like SPIRE it requires the
// workload.spiffe.io security header. SetSVID pushes a rotation to every
// open stream. It stops when the test ends.
type WorkloadAPI struct {
	// Addr is the socket address for workloadapi.WithAddr
	// ("unix:///tmp/.../agent.sock").
	Addr string
	// Path is the socket's file path.
	Path string

	workload.UnimplementedSpiffeWorkloadAPIServer
	ca        *CA
	federated []*CA

	mu   sync.Mutex
	svid *x509svid.SVID
	subs map[chan struct{}]struct{}
}

// StartWorkloadAPI serves svid (issued by ca) on a fresh unix socket in a
// temporary directory. federated CAs' bundles are served too. A nil svid
// serves bundles only and answers SVID requests with PermissionDenied, like
// SPIRE for an unregistered workload.
func StartWorkloadAPI(t testing.TB, ca *CA, svid *x509svid.SVID, federated ...*CA) *WorkloadAPI {
	t.Helper()
	dir, err := os.MkdirTemp("", "spiffetest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock") // short: unix socket paths max out at 108 bytes
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	w := &WorkloadAPI{Addr: "unix://" + path, Path: path, ca: ca, federated: federated, svid: svid,
		subs: map[chan struct{}]struct{}{}}
	gs := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(gs, w)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return w
}

// SetSVID replaces the served SVID and pushes it to open streams.
func (w *WorkloadAPI) SetSVID(svid *x509svid.SVID) {
	w.mu.Lock()
	w.svid = svid
	for ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	w.mu.Unlock()
}

func (w *WorkloadAPI) current() *x509svid.SVID {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.svid
}

func (w *WorkloadAPI) subscribe() (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.subs[ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() { w.mu.Lock(); delete(w.subs, ch); w.mu.Unlock() }
}

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func (w *WorkloadAPI) federatedDER() map[string][]byte {
	m := map[string][]byte{}
	for _, ca := range w.federated {
		m[ca.TD.IDString()] = ca.Cert.Raw
	}
	return m
}

// FetchX509SVID streams the current SVID, and again after each SetSVID.
func (w *WorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, s grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := checkHeader(s.Context()); err != nil {
		return err
	}
	ch, unsub := w.subscribe()
	defer unsub()
	for {
		svid := w.current()
		if svid == nil {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		_, key, err := svid.MarshalRaw()
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if err := s.Send(&workload.X509SVIDResponse{
			Svids: []*workload.X509SVID{{
				SpiffeId: svid.ID.String(), X509Svid: concatDER(svid.Certificates),
				X509SvidKey: key, Bundle: w.ca.Cert.Raw,
			}},
			FederatedBundles: w.federatedDER(),
		}); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-s.Context().Done():
			return nil
		}
	}
}

// FetchX509Bundles sends the bundles once and holds the stream open.
func (w *WorkloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, s grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	if err := checkHeader(s.Context()); err != nil {
		return err
	}
	b := w.federatedDER()
	b[w.ca.TD.IDString()] = w.ca.Cert.Raw
	if err := s.Send(&workload.X509BundlesResponse{Bundles: b}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

// FetchJWTBundles sends the JWKS of every CA once and holds the stream open.
func (w *WorkloadAPI) FetchJWTBundles(_ *workload.JWTBundlesRequest, s grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	if err := checkHeader(s.Context()); err != nil {
		return err
	}
	b := map[string][]byte{}
	for _, ca := range append([]*CA{w.ca}, w.federated...) {
		jwks, err := ca.JWTBundle().Marshal()
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		b[ca.TD.IDString()] = jwks
	}
	if err := s.Send(&workload.JWTBundlesResponse{Bundles: b}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

// FetchJWTSVID signs a JWT-SVID for the workload's SPIFFE ID.
func (w *WorkloadAPI) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	svid := w.current()
	if svid == nil {
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	tok, err := w.ca.signJWT(svid.ID.String(), req.Audience)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &workload.JWTSVIDResponse{Svids: []*workload.JWTSVID{{SpiffeId: svid.ID.String(), Svid: tok}}}, nil
}
