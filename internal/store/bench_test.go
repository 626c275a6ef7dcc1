package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// BenchmarkOpenChecksAndBackup measures what the integrity check costs a
// daemon's start-up (OpenWith: every record read, bbolt's page check) and
// what a verified backup costs, by store size. Run with -bench
// OpenChecksAndBackup -benchtime 3x; it prints a table.
func BenchmarkOpenChecksAndBackup(b *testing.B) {
	rows := map[int]string{}
	sizes := []int{100, 1000, 5000}
	for _, machines := range sizes {
		path := filepath.Join(b.TempDir(), "torpor.db")
		s, err := OpenWith(path, Options{NoCompact: true})
		if err != nil {
			b.Fatal(err)
		}
		env := map[string]string{"K": strings.Repeat("v", 1500)}
		for i := 0; i < machines; i += 100 {
			err := s.Update(func(tx *Tx) error {
				for j := i; j < i+100 && j < machines; j++ {
					id := fmt.Sprintf("m%05d", j)
					if err := tx.PutMachine(model.Machine{ID: id, App: "app", State: model.StateStopped, Config: model.MachineConfig{Image: "img", Env: env}}); err != nil {
						return err
					}
					for v := 0; v < 5; v++ {
						if err := tx.PutConfig(id, fmt.Sprintf("v%02d", v), model.MachineConfig{Image: "img", Env: env}, model.ImageRef{}); err != nil {
							return err
						}
					}
					for e := 0; e < 50; e++ {
						if _, err := tx.AppendEvent(id, model.Event{Type: "start", Status: "started", Source: "user"}); err != nil {
							return err
						}
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		s.Close()
		fi, _ := os.Stat(path)
		b.Run(fmt.Sprintf("machines=%d", machines), func(b *testing.B) {
			var open, backup time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				s, err := OpenWith(path, Options{NoCompact: true})
				if err != nil {
					b.Fatal(err)
				}
				open += time.Since(start)
				start = time.Now()
				if _, err := s.Backup(); err != nil {
					b.Fatal(err)
				}
				backup += time.Since(start)
				s.Close()
			}
			b.ReportMetric(float64(open.Milliseconds())/float64(b.N), "open-ms")
			b.ReportMetric(float64(backup.Milliseconds())/float64(b.N), "backup-ms")
			rows[machines] = (fmt.Sprintf("| %5d | %6.1f MiB | %7.0f ms | %7.0f ms |", machines, float64(fi.Size())/(1<<20),
				float64(open.Milliseconds())/float64(b.N), float64(backup.Milliseconds())/float64(b.N)))
		})
	}
	fmt.Println("| machines | store | open (checked) | verified backup |\n| --- | --- | --- | --- |")
	for _, n := range sizes {
		fmt.Println(rows[n])
	}
}
