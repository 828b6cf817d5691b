import numpy as np, sys
exec(open('/tmp/s14/exp/frontier2.py').read().split('for L in sys.argv')[0])
for L in sys.argv[1:]:
    Ac,Uc=load(f'/tmp/s14/exp/cal-L{L}.f32'); At,Ut=load(f'/tmp/s14/exp/gpl-L{L}.f32')
    Ac,Uc,At,Ut=Ac[1:],Uc[1:],At[1:],Ut[1:]
    hc=Ac*Uc; ht=At*Ut
    mu=np.abs(Uc).mean(0); ma=np.abs(Ac).mean(0)
    def corr(x,y):
        x=x-x.mean(0); y=y-y.mean(0)
        return (x*y).sum(0)/np.sqrt((x*x).sum(0)*(y*y).sum(0))
    ca=corr(np.abs(Ac),np.abs(hc)); cu=corr(np.abs(Uc),np.abs(hc))
    upf=cu>ca
    print(f'L{L}: up-first neurons {upf.mean()*100:.1f}%  mean corr gate {ca.mean():.3f} up {cu.mean():.3f}')
    sc_upw=np.abs(At)*mu
    sc_mix=np.where(upf[None,:],np.abs(Ut)*ma,np.abs(At)*mu)
    sc_upf=np.abs(Ut)*ma
    frs={'upw':curve(sc_upw,ht,0),'mixed':curve(sc_mix,ht,0),'upfirst':curve(sc_upf,ht,0),'oracle':curve(np.abs(ht),ht,0)}
    levels=[min(e for e,b in frs['upw'] if b>=x) for x in (0.16,0.19,0.22,0.25)]
    for E in levels:
        print(f'L{L} err<={E:.4f}: '+'  '.join(f'{k} {100*at(f,E):.1f}%' for k,f in frs.items()), flush=True)
