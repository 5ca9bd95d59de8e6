// vcsim: VMware's own vSphere API simulator (govmomi's simulator package) for the tests.
//
// Built from Debian's golang-github-vmware-govmomi-dev by testbed/vcsim.py; it listens on
// 127.0.0.1 only, with TLS, prints one JSON line (URL, certificate thumbprint, CA file) and
// runs until its standard input closes or it is signalled.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	mode := flag.String("mode", "esx", "esx (a standalone ESXi) or vpx (a vCenter)")
	flag.Parse()

	var model *simulator.Model
	switch *mode {
	case "esx":
		model = simulator.ESX()
	case "vpx":
		model = simulator.VPX()
	default:
		log.Fatalf("unknown mode %q", *mode)
	}
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()

	// Secret-leak tests need a password that cannot occur by chance in logs or files: from the
	// environment, not argv, so that a test grepping every process's argv finds none.
	password := os.Getenv("VCSIM_PASSWORD")
	if password == "" {
		password = "pass"
	}
	// An explicit login (not the default one, which accepts any password) so wrong passwords fail.
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword("user", password)}
	cert, err := selfSigned()
	if err != nil {
		log.Fatal(err)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	server := model.Service.NewServer()
	defer server.Close()

	certFile, err := server.CertificateFile()
	if err != nil {
		log.Fatal(err)
	}
	sum := sha256.Sum256(server.Certificate().Raw)
	hexes := make([]string, len(sum))
	for i, b := range sum {
		hexes[i] = fmt.Sprintf("%02X", b)
	}
	u := *server.URL
	u.User = nil
	out, _ := json.Marshal(map[string]string{
		"url":        u.String(),
		"thumbprint": strings.Join(hexes, ":"),
		"ca_file":    certFile,
		"mode":       *mode,
	})
	fmt.Println(string(out))

	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-done:
	case <-signals:
	}
}

// selfSigned makes a fresh P-256 certificate for 127.0.0.1: Go's built-in test certificate has a
// 1024-bit RSA key, which Debian's OpenSSL (security level 2) refuses as too weak.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	template := x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "vcsim.test", Organization: []string{"vm2kvm tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost", "vcsim.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
