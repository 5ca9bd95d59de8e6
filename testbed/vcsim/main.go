// vcsim: VMware's own vSphere API simulator (govmomi's simulator package) for the tests.
//
// Built from Debian's golang-github-vmware-govmomi-dev by testbed/vcsim.py; it listens on
// 127.0.0.1 only, with TLS, prints one JSON line (URL, certificate thumbprint, CA file) and
// runs until its standard input closes or it is signalled.
//
// Standard input also carries test controls, one per line, each answered by one JSON line: what
// a real host's guest does and the simulator has no API for (see control below).
package main

import (
	"bufio"
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
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
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
	simulator.Map.AddHandler(snapshotConfigs{})

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
		lines := bufio.NewScanner(os.Stdin)
		for lines.Scan() {
			answer, _ := json.Marshal(control(strings.Fields(lines.Text())))
			fmt.Println(string(answer))
		}
		close(done)
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-done:
	case <-signals:
	}
}

// control runs one test control:
//
//	tools VM STATUS       the VM's guest.toolsRunningStatus (guestToolsRunning, ...): the simulator
//	                      creates every VM with Tools not running and has no call to start them
//	ignore-shutdown VM    the VM's guest ignores ShutdownGuest (a hung guest): the simulator
//	                      otherwise powers off at once; PowerOffVM_Task still works
//	opaque-network VM NAME ID
//	                      an NSX segment NAME (opaqueNetworkId ID) in the VM's datacenter, in the
//	                      VM's network list: the API cannot create one, and the simulator's
//	                      ReconfigVM_Task puts an empty reference there for an opaque NIC backing
func control(words []string) map[string]string {
	if len(words) == 4 && words[0] == "opaque-network" {
		return opaqueNetwork(words[1], words[2], words[3])
	}
	if len(words) != 2 && len(words) != 3 {
		return map[string]string{"error": "usage: tools VM STATUS | ignore-shutdown VM | opaque-network VM NAME ID"}
	}
	entity := simulator.Map.FindByName(words[1], vmRefs())
	vm, ok := entity.(*simulator.VirtualMachine)
	if !ok {
		return map[string]string{"error": "no VM named " + words[1]}
	}
	switch {
	case words[0] == "tools" && len(words) == 3:
		simulator.Map.WithLock(vm, func() {
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "guest.toolsRunningStatus", Val: words[2]},
				{Name: "summary.guest.toolsRunningStatus", Val: words[2]},
			})
		})
	case words[0] == "ignore-shutdown" && len(words) == 2:
		simulator.Map.AddHandler(&stubbornGuest{Self: types.ManagedObjectReference{Type: "StubbornGuest", Value: words[1]}, vm: vm.Self})
	default:
		return map[string]string{"error": "unknown control " + words[0]}
	}
	return map[string]string{"ok": strings.Join(words, " ")}
}

func vmRefs() []types.ManagedObjectReference {
	var refs []types.ManagedObjectReference
	for _, e := range simulator.Map.All("VirtualMachine") {
		refs = append(refs, e.Reference())
	}
	return refs
}

// stubbornGuest undoes a guest shutdown of one VM as soon as the simulator applies it.  The
// simulator's ShutdownGuest changes only the two power states; PowerOffVM_Task also sets
// summary.runtime.bootTime, which tells the two apart (govmomi 0.24.2, pinned by the build key).
type stubbornGuest struct {
	Self types.ManagedObjectReference
	vm   types.ManagedObjectReference
}

func (s *stubbornGuest) Reference() types.ManagedObjectReference { return s.Self }
func (s *stubbornGuest) PutObject(mo.Reference)                  {}
func (s *stubbornGuest) RemoveObject(types.ManagedObjectReference) {}

func (s *stubbornGuest) UpdateObject(obj mo.Reference, changes []types.PropertyChange) {
	if obj.Reference() != s.vm || len(changes) != 2 {
		return
	}
	for _, c := range changes {
		if c.Name == "runtime.powerState" && c.Val == types.VirtualMachinePowerStatePoweredOff {
			on := types.VirtualMachinePowerStatePoweredOn
			simulator.Map.Update(obj, []types.PropertyChange{
				{Name: "runtime.powerState", Val: on},
				{Name: "summary.runtime.powerState", Val: on},
			})
			return
		}
	}
}

func opaqueNetwork(vmName, name, id string) map[string]string {
	vm, ok := simulator.Map.FindByName(vmName, vmRefs()).(*simulator.VirtualMachine)
	if !ok {
		return map[string]string{"error": "no VM named " + vmName}
	}
	var folder *simulator.Folder
	for _, e := range simulator.Map.All("Datacenter") {
		if dc, ok := e.(*simulator.Datacenter); ok {
			folder, _ = simulator.Map.Get(dc.NetworkFolder).(*simulator.Folder)
			break
		}
	}
	if folder == nil {
		return map[string]string{"error": "no network folder"}
	}
	if err := folder.AddOpaqueNetwork(types.OpaqueNetworkSummary{
		NetworkSummary:  types.NetworkSummary{Name: name},
		OpaqueNetworkId: id,
	}); err != nil {
		return map[string]string{"error": err.Error()}
	}
	net := simulator.Map.FindByName(name, folder.ChildEntity)
	if net == nil {
		return map[string]string{"error": "the opaque network was not added"}
	}
	simulator.Map.WithLock(vm, func() {
		networks := []types.ManagedObjectReference{net.Reference()}
		for _, ref := range vm.Network {
			if ref.Value != "" {
				networks = append(networks, ref)
			}
		}
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "network", Val: networks}})
	})
	return map[string]string{"ok": "opaque-network " + vmName + " " + name}
}

// snapshotConfigs gives every new snapshot a device list of its own.  The simulator copies the
// VM's configuration into the snapshot but shares the device slice's array, so the next
// ReconfigVM_Task (which edits that array in place) changes the snapshot's disks too; a real host's
// snapshot config keeps the disks as they were (govmomi 0.24.2, pinned by the build key).
type snapshotConfigs struct{}

func (snapshotConfigs) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "SnapshotConfigs", Value: "all"}
}
func (snapshotConfigs) UpdateObject(mo.Reference, []types.PropertyChange) {}
func (snapshotConfigs) RemoveObject(types.ManagedObjectReference)         {}

func (snapshotConfigs) PutObject(obj mo.Reference) {
	if snapshot, ok := obj.(*simulator.VirtualMachineSnapshot); ok {
		devices := snapshot.Config.Hardware.Device
		snapshot.Config.Hardware.Device = append([]types.BaseVirtualDevice(nil), devices...)
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
